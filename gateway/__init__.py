"""mrx: the mutual-recognition exchange gateway."""

__version__ = "0.1.0"
