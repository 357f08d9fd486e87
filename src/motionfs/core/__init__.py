"""The drive's engine: names and POSIX metadata (the tree), checkpoints, expiry."""
