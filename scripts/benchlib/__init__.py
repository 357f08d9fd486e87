"""The code of scripts/bench.py (the entry point), one concern per module, so that no file
grows past the project's size limit."""
