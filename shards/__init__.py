"""Stage 0: read RS annotations, caption them (B2C, M2B), de-duplicate (p-Hash) and write webdataset shards."""

__version__ = "0.1.0"
