"""sealexports: bulk CSV/JSON exports of web analytics data from one SQLite file."""

__version__ = "0.1.0"
