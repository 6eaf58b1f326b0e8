"""The sharp-rt version (one place; ``sharp_rt.__version__`` and the package metadata read it)."""

__version__ = "0.2.0"
