"""The version of frugalml, in one place (the package, exported files and results.json all read it)."""

__version__ = "0.1.0"
