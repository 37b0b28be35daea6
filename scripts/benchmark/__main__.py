"""`python -m benchmark` (scripts/ on the path): see benchmark/__init__.py."""

from __future__ import annotations

import sys

from benchmark.main import main

sys.exit(main())
