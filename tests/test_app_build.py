"""Building the app raises no deprecation warning: Litestar 2.25 deprecates inferred handler and
dependency parameters (they stop working in 3.0), so every one is declared."""

from __future__ import annotations

import warnings
from pathlib import Path

from sealexports.api.app import create_app
from sealexports.config import Settings
from sealexports.storage.database import connect


def test_app_builds_without_deprecation_warnings(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    connect(db).close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_app(Settings(database=db, exports_dir=tmp_path / "exports"))
    deprecations = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert deprecations == []
