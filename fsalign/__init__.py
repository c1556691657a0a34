"""fsalign: alignment modelling for speech recognition, built on k2."""
from fsalign.errors import FsalignError, InfeasibleAlignment

__version__ = "0.1.0"
