"""File content: the local cache, open files and blocks, the disk-space guard,
and the journal that writes content back to the store."""
