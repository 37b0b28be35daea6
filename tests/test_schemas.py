"""The HTTP schema's names are the library's: a type, format or status added on one side only
fails here, not as a 500 when a job with it is shown."""

from __future__ import annotations

from typing import get_args

from sealexports.api.schemas import (
    EXPORT_TYPE_NAMES,
    FORMAT_NAMES,
    STATUS_NAMES,
    ExportTypeName,
    FormatName,
    StatusName,
)
from sealexports.exports.formats import FORMATS
from sealexports.exports.types import EXPORT_TYPES
from sealexports.storage.export_jobs import Status


def test_export_type_literal_is_the_registry() -> None:
    assert sorted(get_args(ExportTypeName)) == sorted(EXPORT_TYPES)
    assert sorted(EXPORT_TYPE_NAMES) == sorted(EXPORT_TYPES)


def test_format_literal_is_the_writers_formats() -> None:
    assert sorted(get_args(FormatName)) == sorted(FORMATS)
    assert sorted(FORMAT_NAMES) == sorted(FORMATS)


def test_status_literal_is_the_state_machine() -> None:
    assert sorted(get_args(StatusName)) == sorted(s.value for s in Status)
    assert sorted(STATUS_NAMES) == sorted(s.value for s in Status)
