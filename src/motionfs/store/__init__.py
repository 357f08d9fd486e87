"""The store: where namespaces keep their bytes (local host tree, S3, chuk-virtual-fs providers)."""
