"""The version of `interp`, in one place (the facade re-exports it as `interp.__version__`)."""

__version__ = "0.1.0"
