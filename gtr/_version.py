"""The version of gtr (a leaf: the commands, the exporter and gtr-bench record it)."""
__version__ = "0.1.0"
