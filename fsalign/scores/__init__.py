"""Score matrices: posteriors with priors and blank penalty, gradient scores (section 5), normalized gradients.

Everything the engine intersects with a topology is a dense score matrix built here.
"""
from fsalign.scores.gradient import (
    GRAD_PADDING,
    PREFIXES,
    AedModel,
    CtcModel,
    EncoderModel,
    gradient_scores,
)
from fsalign.scores.gradscore import VARIANTS, GradientScorer, grad_align, grad_score_matrix, gradscore_matrix
from fsalign.scores.matrix import ScoreMatrix
from fsalign.scores.normgrad import normed_grad_factor, normed_grad_log_softmax
from fsalign.scores.posterior import PosteriorScorer, apply_blank_penalty, blank_separated_log_probs
from fsalign.scores.prefix import (
    aed_label_log_probs,
    ctc_prefix_log_probs,
    joint_label_log_probs,
    transcript_targets,
)
from fsalign.scores.priors import (
    PRIOR_MODES,
    CorpusPrior,
    RunningPrior,
    batch_log_prior,
    estimate_corpus_prior,
    log_prior_for,
    prior_from_alignment,
    prior_from_transcripts,
    sequence_log_prior,
)
from fsalign.util import valid_frame_mask

__all__ = [
    "GRAD_PADDING",
    "PREFIXES",
    "PRIOR_MODES",
    "VARIANTS",
    "AedModel",
    "CorpusPrior",
    "CtcModel",
    "EncoderModel",
    "GradientScorer",
    "PosteriorScorer",
    "ScoreMatrix",
    "RunningPrior",
    "aed_label_log_probs",
    "apply_blank_penalty",
    "batch_log_prior",
    "blank_separated_log_probs",
    "ctc_prefix_log_probs",
    "estimate_corpus_prior",
    "grad_align",
    "grad_score_matrix",
    "gradscore_matrix",
    "gradient_scores",
    "joint_label_log_probs",
    "log_prior_for",
    "normed_grad_factor",
    "normed_grad_log_softmax",
    "prior_from_alignment",
    "prior_from_transcripts",
    "sequence_log_prior",
    "transcript_targets",
    "valid_frame_mask",
]
