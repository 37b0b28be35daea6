"""Export jobs: their lifecycle, the work of running one, and the huey queue that runs them."""
