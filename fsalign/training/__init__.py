"""Training."""
from fsalign.training.loop import *  # noqa
from fsalign.training.loop import _Criterion  # noqa
