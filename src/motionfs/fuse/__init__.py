"""The FUSE side: kernel requests in, tree calls out; the drive facade and the
read-only .snapshots views."""
