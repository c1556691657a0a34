"""fsalign: alignment modelling for speech recognition, built on k2.

Every alignment question is a topology FST intersected with a dense score
matrix: the log semiring gives full-sum training and soft alignments, the max
semiring Viterbi alignments. See README.md and DESIGN.md.

The engine and the criteria are imported eagerly; the data side (lhotse,
sentencepiece) is imported on first use of its names.
"""
import importlib

from fsalign._compat import check_stack

check_stack()

from fsalign.alignment import Alignment, TokenSpan, WordSpan, frame_time_offset  # noqa: E402
from fsalign.errors import FsalignError, InfeasibleAlignment  # noqa: E402
from fsalign.fullsum import full_sum_loss, full_sum_scores, soft_alignment  # noqa: E402
from fsalign.gradscore import grad_align, grad_score_matrix, gradient_scores  # noqa: E402
from fsalign.graphs import TrainingGraphs  # noqa: E402
from fsalign.normgrad import normed_grad_log_softmax  # noqa: E402
from fsalign.prefix import aed_label_log_probs, ctc_prefix_log_probs, joint_label_log_probs  # noqa: E402
from fsalign.scores import (  # noqa: E402
    CorpusPrior,
    RunningPrior,
    apply_blank_penalty,
    batch_log_prior,
    blank_separated_log_probs,
    estimate_corpus_prior,
    prior_from_alignment,
    prior_from_transcripts,
    sequence_log_prior,
)
from fsalign.topology import CtcTopology, HmmTopology, RelaxedTopology, Topology  # noqa: E402
from fsalign.viterbi import viterbi_align  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "Tokenizer": "fsalign.tokenizers",
    "CharTokenizer": "fsalign.tokenizers",
    "SentencePieceTokenizer": "fsalign.tokenizers",
    "PhoneTokenizer": "fsalign.tokenizers",
    "read_lexicon": "fsalign.tokenizers",
    "Batch": "fsalign.corpus",
    "CutDataset": "fsalign.corpus",
    "make_dataloader": "fsalign.corpus",
    "SoftmaxHead": "fsalign.models.heads",
    "BlankSeparatedHead": "fsalign.models.heads",
    "plot_grad_scores": "fsalign.plot",
    "ConformerModel": "fsalign.models.conformer",
    "ConformerConfig": "fsalign.models.conformer",
    "load_checkpoint": "fsalign.checkpoint",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fsalign' has no attribute {name!r}")


__all__ = [
    "Alignment",
    "CorpusPrior",
    "CtcTopology",
    "FsalignError",
    "HmmTopology",
    "InfeasibleAlignment",
    "RelaxedTopology",
    "RunningPrior",
    "TokenSpan",
    "Topology",
    "TrainingGraphs",
    "WordSpan",
    "aed_label_log_probs",
    "apply_blank_penalty",
    "batch_log_prior",
    "blank_separated_log_probs",
    "ctc_prefix_log_probs",
    "estimate_corpus_prior",
    "frame_time_offset",
    "full_sum_loss",
    "full_sum_scores",
    "grad_align",
    "grad_score_matrix",
    "gradient_scores",
    "joint_label_log_probs",
    "normed_grad_log_softmax",
    "prior_from_alignment",
    "prior_from_transcripts",
    "sequence_log_prior",
    "soft_alignment",
    "viterbi_align",
    *_LAZY,
]
