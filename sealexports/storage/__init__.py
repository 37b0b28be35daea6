"""SQLite storage: connections, schema, and the queries on accounts, sites, keys, events and jobs."""
