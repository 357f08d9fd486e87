"""The metadata engine: inodes, links, xattrs, the journal table and checkpoint records."""
