"""The scorer of a checkpoint, every option checked before any audio is read.

* :func:`make_scorer` builds it for posterior alignment (Viterbi under a topology, with prior
  scale, blank penalty and the training scales, eq. 6 and Table 14) or gradient alignment
  (GradScore / GradScoreExt at the 10 ms feature rate, section 5) of the CTC, AED or hybrid
  label scores of eq. 50 (:func:`grad_weights`, by default AED when the checkpoint has a decoder).
"""
from typing import Optional, Tuple, Union

from fsalign.checkpoint import LoadedCheckpoint
from fsalign.engine.builtin import TOPOLOGIES, make_topology
from fsalign.engine.mismatch import MismatchOptions
from fsalign.engine.scales import Scales
from fsalign.errors import FsalignError
from fsalign.scores.gradscore import ALIGN_PERCENTILE, VARIANTS, GradientScorer, grad_source_weights
from fsalign.scores.posterior import PosteriorScorer
from fsalign.util import LongAudio, check_option, is_finite_number

__all__ = ["SCORES", "DEFAULT_PRIOR_SCALE", "DEFAULT_PRIOR_SCALES", "MISMATCH_NEEDS_POSTERIOR", "make_scorer",
           "default_prior_scale", "has_decoder", "grad_weights"]

SCORES = ("posterior", *VARIANTS)

DEFAULT_PRIOR_SCALE = 1.0
"""β of posterior alignment with a checkpoint that has a corpus prior (Table 14's prior
correction), for the topologies :data:`DEFAULT_PRIOR_SCALES` does not name: it shrinks the
over-long pauses of full-sum models; docs/results.md measures it."""

DEFAULT_PRIOR_SCALES = {"hmm": 1.5}
"""β by alignment topology where it differs from :data:`DEFAULT_PRIOR_SCALE`. The HMM's
optimum measured 1.5-2.0 on three corpora (CTC's curve is flat from 1.0 to 1.6): 1.5 keeps a margin below the
β at which pauses start to vanish (between 2.0 and 2.5 on one of them); docs/results.md."""


def default_prior_scale(topology_kind: Optional[str]) -> float:
    """The default β for aligning with a topology of this kind (``"ctc"``, ``"hmm"``, ...)."""
    return DEFAULT_PRIOR_SCALES.get(topology_kind, DEFAULT_PRIOR_SCALE)

MISMATCH_NEEDS_POSTERIOR = (
    "allowing transcripts that do not match the audio (--allow-mismatch) needs --scores posterior: gradient "
    "scores (grad, gradext) have one column per transcript position, each placed where its gradient falls, "
    "and no score for untranscribed speech or for a word that was not spoken")


def has_decoder(model) -> bool:
    """Whether ``model`` has an AED decoder (a Conformer built with ``aed_layers > 0``)."""
    return callable(getattr(model, "aed_log_probs", None)) and getattr(model, "decoder", True) is not None


def grad_weights(scores: str, grad_source: Optional[str] = None, aed_weight: Optional[float] = None,
                 decoder: bool = False, model_name: str = "this checkpoint") -> Optional[Tuple[str, float, float]]:
    """The grad source and (λ_CTC, λ_AED) of eq. 50 for a model with or without an AED decoder.

    Args:
      scores: "posterior", "grad" or "gradext".
      grad_source: "ctc", "aed" or "hybrid"; None: "hybrid" when ``aed_weight`` is given, else
        "aed" when the model has a decoder, else "ctc".
      aed_weight: λ_AED of "hybrid" (λ_CTC = 1 − λ_AED; default 0.5).
      decoder: whether the model has an AED decoder (:func:`has_decoder`).
      model_name: how an error names the model.

    Returns:
      ``(source, ctc_weight, aed_weight)``; None for posterior scores.

    Raises:
      FsalignError: a grad option with posterior scores, an unknown source or weight, or aed/hybrid
        asked of a model without a decoder.
    """
    if scores == "posterior":
        if grad_source is not None or aed_weight is not None:
            raise FsalignError("grad source and aed weight apply to gradient scores (grad, gradext), not 'posterior'")
        return None
    if grad_source is None:
        grad_source = "hybrid" if aed_weight is not None else ("aed" if decoder else "ctc")
    ctc_weight, aed = grad_source_weights(grad_source, aed_weight)
    if grad_source != "ctc" and not decoder:
        raise FsalignError(f"grad source {grad_source!r} needs a model with an AED decoder, and {model_name} has none "
                           f"(train one with --aed-layers N, or use grad source 'ctc')")
    return grad_source, ctc_weight, aed


def make_scorer(checkpoint: LoadedCheckpoint, scores: str = "posterior", topology: Optional[str] = None,
                prior_scale: Optional[float] = None, blank_penalty: float = 0.0,
                posterior_scale: Optional[float] = None, transition_scale: Optional[float] = None,
                grad_p: float = 0.1, grad_chunk_size: Optional[int] = 32, grad_blank_score: float = -6.0,
                grad_percentile: float = ALIGN_PERCENTILE, grad_prefix: str = "forward",
                grad_source: Optional[str] = None,
                aed_weight: Optional[float] = None, mismatch: Optional[MismatchOptions] = None,
                long_audio: LongAudio = LongAudio()) -> Union[PosteriorScorer, GradientScorer]:
    """The scorer of a checkpoint, every option checked.

    Args:
      checkpoint: from :func:`fsalign.checkpoint.load_checkpoint` (model on its device).
      scores: "posterior" (Viterbi on the model's posteriors), "grad" (GradScore) or
        "gradext" (GradScoreExt).
      topology: "ctc", "hmm" or "relaxed" for posterior alignment; None: the training topology.
      prior_scale: β, subtracting β·log prior from the posteriors; needs the checkpoint's corpus
        prior when != 0. None: :func:`default_prior_scale` of the alignment topology (1.5 for
        the HMM, 1 for the others) when the checkpoint has a corpus prior (the recipe stores one
        at the end of training) and ``mismatch`` is None, else 0.
      blank_penalty: added to the blank/silence log-probability before renormalising (Table 14).
      posterior_scale: α; None: the training criterion's (with the training topology), else 1.
      transition_scale: γ; None: as ``posterior_scale``.
      grad_p: p of the gradient norm (eq. 22).
      grad_chunk_size: label positions per batched gradient (bounds memory; None: all).
      grad_blank_score: γ_ε of GradScore.
      grad_percentile: γ_percentile of GradScoreExt (:data:`~fsalign.scores.gradscore.ALIGN_PERCENTILE`).
      grad_prefix: CTC prefix score of G, ``"forward"`` or ``"onset"``.
      grad_source: the label scores G differentiates (grad/gradext): "ctc", "aed" or "hybrid"
        (eq. 50); None: AED when the model has a decoder, else CTC (:func:`grad_weights`).
      aed_weight: λ_AED of "hybrid", in [0, 1] (λ_CTC = 1 − λ_AED; default 0.5).
      mismatch: allow transcripts that do not match the audio exactly (``--allow-mismatch``,
        :class:`~fsalign.engine.mismatch.MismatchOptions`); posterior scores only. None: as they are.
      long_audio: when a recording is long and how its encoder windows are cut (posterior scores;
        :class:`~fsalign.util.LongAudio`, docs/long_audio.md).

    Raises:
      FsalignError: an option outside its range (named, with the value and the valid range), or
        ``mismatch`` with gradient scores.
    """
    check_option("scores", scores, scores in SCORES, f"one of {SCORES}")
    check_option("mismatch", mismatch, mismatch is None or isinstance(mismatch, MismatchOptions),
                 "None or MismatchOptions")
    if mismatch is not None and scores != "posterior":
        raise FsalignError(MISMATCH_NEEDS_POSTERIOR)
    model, _, trained, metadata = checkpoint
    frame_shift = float(metadata.get("frame_shift_s", 0.01))
    weights = grad_weights(scores, grad_source, aed_weight, has_decoder(model))
    if weights is not None:
        _, ctc_weight, aed = weights
        return GradientScorer(model, scores, p=grad_p, blank_score=grad_blank_score, percentile=grad_percentile,
                              prefix=grad_prefix, ctc_weight=ctc_weight, aed_weight=aed, chunk_size=grad_chunk_size,
                              frame_shift_s=frame_shift)
    check_option("topology", topology, topology is None or topology in TOPOLOGIES, f"one of {TOPOLOGIES}")
    for name, value in (("prior scale", prior_scale), ("posterior scale", posterior_scale),
                        ("transition scale", transition_scale)):
        check_option(name, value, value is None or is_finite_number(value), "a finite number")
    trained_kind = (metadata.get("topology") or {}).get("kind")
    same = topology is None or topology == trained_kind
    topo = trained if same else make_topology(topology, model.num_labels)
    criterion = (metadata.get("criterion") or {}) if same else {}
    log_prior = None
    if prior_scale is None:  # (the mismatch penalties were chosen without a prior: docs/mismatch.md)
        use = metadata.get("corpus_prior") is not None and mismatch is None
        prior_scale = default_prior_scale(topology or trained_kind) if use else 0.0
    if prior_scale:
        log_prior = metadata.get("corpus_prior")
        if log_prior is None:
            raise FsalignError("prior scale needs the corpus prior, and this checkpoint has none "
                               "(it is stored at the end of training)")
        log_prior = log_prior.to(next(model.parameters()).device)
    scales = Scales(
        posterior_scale=criterion.get("posterior_scale", 1.0) if posterior_scale is None else posterior_scale,
        prior_scale=prior_scale, log_prior=log_prior,
        transition_scale=criterion.get("transition_scale", 1.0) if transition_scale is None else transition_scale,
    )
    return PosteriorScorer(model, topo, scales, blank_penalty, frame_shift, mismatch, long_audio)
