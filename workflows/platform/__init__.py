"""Storage and cluster plumbing every stage shares: local/S3 files (``storage``), the clip store
(``clipstore``), MLflow (``tracking``) and the Ray cluster (``raycluster``)."""
