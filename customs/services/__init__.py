"""Use cases, where the CLI, the HTTP API and the flows meet the database: one function per use case,
one transaction each (or a read, then work without a lock, then one transaction), no Prefect."""
