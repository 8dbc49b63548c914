"""seedstab: regression tests for the seed stability of transformer internals."""

__version__ = "0.1.0"
