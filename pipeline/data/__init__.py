"""Tick data: schemas, sources, quality checks and the partitioned parquet store."""
