"""fsalign: alignment modelling for speech recognition, built on k2.

Every alignment question is a topology FST intersected with a dense score
matrix: the log semiring gives full-sum training and soft alignments, the max
semiring Viterbi alignments. See README.md and DESIGN.md.
"""
from fsalign._compat import check_stack

check_stack()

from fsalign.alignment import Alignment, TokenSpan, WordSpan  # noqa: E402
from fsalign.errors import FsalignError, InfeasibleAlignment  # noqa: E402
from fsalign.fullsum import full_sum_loss, full_sum_scores, soft_alignment  # noqa: E402
from fsalign.graphs import TrainingGraphs  # noqa: E402
from fsalign.topology import CtcTopology, HmmTopology, RelaxedTopology, Topology  # noqa: E402
from fsalign.viterbi import viterbi_align  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Alignment",
    "CtcTopology",
    "FsalignError",
    "HmmTopology",
    "InfeasibleAlignment",
    "RelaxedTopology",
    "TokenSpan",
    "Topology",
    "TrainingGraphs",
    "WordSpan",
    "full_sum_loss",
    "full_sum_scores",
    "soft_alignment",
    "viterbi_align",
]
