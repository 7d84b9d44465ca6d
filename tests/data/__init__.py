"""Data tests: schemas, ranges and split leakage of generated corpora."""
