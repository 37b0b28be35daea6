"""The export engine: request validation, filters, the 13 export types, writers, estimates."""
