"""The ``fsalign`` command line."""
from fsalign.cli.main import main

__all__ = ["main"]
