"""Getting events in: the events format (event_format.py, readers.py), visits stitched from them
(stitcher.py), and imports of files or HTTP batches (importer.py), all written through
`storage.visits.insert_visits`. No HTTP and no command line here."""

from sealexports.ingest.importer import (
    BATCH_MAX_EVENTS,
    BatchReport,
    ImportReport,
    import_events,
    ingest_batch,
)
from sealexports.ingest.readers import Item, Meter, NdjsonLines, csv_items, json_array_items, ndjson_items

__all__ = [
    "BATCH_MAX_EVENTS",
    "BatchReport",
    "ImportReport",
    "Item",
    "Meter",
    "NdjsonLines",
    "csv_items",
    "import_events",
    "ingest_batch",
    "json_array_items",
    "ndjson_items",
]
