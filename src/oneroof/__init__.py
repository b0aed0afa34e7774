"""oneroof: change a production PostgreSQL database without ever putting it at risk."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("oneroof")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
