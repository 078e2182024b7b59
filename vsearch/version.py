"""The package version: one place, read by setup.cfg and written into manifests and meta.json."""

__version__ = "0.1.0"
