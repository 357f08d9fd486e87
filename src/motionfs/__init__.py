"""motionfs: the chuk-motion artifact store as a POSIX drive."""

__version__ = "0.1.0"
