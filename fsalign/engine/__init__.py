"""The engine: label topologies as k2 FSTs, training graphs, lattices, full sum and Viterbi.

Every alignment question is a topology FST intersected with a dense score matrix: the log
semiring gives the full-sum score and soft alignments, the max semiring the Viterbi path.
The engine imports nothing of models, corpora, training or the command line.
"""
from fsalign.engine.builtin import (
    TOPOLOGIES,
    CtcTopology,
    HmmTopology,
    RelaxedTopology,
    make_topology,
)
from fsalign.engine.fullsum import (
    full_sum_loss,
    full_sum_scores,
    occupancies,
    soft_alignment,
    total_scores,
)
from fsalign.engine.graphs import (
    Transcript,
    min_frames_of,
    scale_transitions,
    validate_transcripts,
)
from fsalign.engine.lattice import check_inputs, intersect
from fsalign.engine.scales import Scales
from fsalign.engine.topology import Topology, TrainingGraphs
from fsalign.engine.viterbi import best_paths, viterbi_align

__all__ = [
    "TOPOLOGIES",
    "CtcTopology",
    "HmmTopology",
    "RelaxedTopology",
    "Topology",
    "TrainingGraphs",
    "Transcript",
    "check_inputs",
    "Scales",
    "best_paths",
    "occupancies",
    "total_scores",
    "full_sum_loss",
    "full_sum_scores",
    "intersect",
    "make_topology",
    "min_frames_of",
    "scale_transitions",
    "soft_alignment",
    "validate_transcripts",
    "viterbi_align",
]
