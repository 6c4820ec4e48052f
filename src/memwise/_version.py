"""The package version, in the foundation layer so run manifests can name it without importing the facade."""

__version__ = "0.1.0"
