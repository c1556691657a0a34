"""Posterior score matrices: the scorer, blank separation (eq. 15-17) and the blank penalty (Table 14).

:class:`PosteriorScorer` turns a model's output into a :class:`~fsalign.scores.matrix.ScoreMatrix`
under a topology, with the scales of eq. (6) and a blank penalty.

Dimension symbols legend:
  B: batch size (number of sequences)
  T: number of frames (padded length of the batch)
  C: number of score-matrix columns = alignment labels, blank/silence included
"""
import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from fsalign.engine.mismatch import MismatchOptions, MismatchTopology
from fsalign.engine.scales import Scales
from fsalign.engine.topology import Topology
from fsalign.scores.matrix import ScoreMatrix
from fsalign.scores.mismatch import with_garbage_column
from fsalign.util import LongAudio, Seconds, check_blank, check_option, is_finite_number

__all__ = ["PosteriorScorer", "blank_separated_log_probs", "apply_blank_penalty"]


def blank_separated_log_probs(logits: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """Log-probabilities of the blank-separated CTC output (eq. 15-17, 29).

    The blank gets its own sigmoid and the other labels share a softmax::

        log p'(eps) = log sigmoid(z_eps)
        log p'(y)   = log sigmoid(-z_eps) + log_softmax_{A}(z_A)_y     (y != eps)

    The result is a normalised distribution over all ``C`` columns
    (``logsumexp`` over the last axis is 0), with blank in column ``blank``, so
    it can be used wherever ``log_softmax(logits)`` is.

    Args:
      logits: Tensor of shape (..., C), typically (B, T, C), with C >= 2.
      blank: column of the blank logit (any index; negative counts from the end).

    Returns:
      Tensor of the same shape and dtype as ``logits``.
    """
    num_labels = logits.shape[-1]
    if num_labels < 2:
        raise ValueError(f"blank separation needs at least 2 columns, got logits of shape {tuple(logits.shape)}")
    blank = check_blank(blank, num_labels)
    z_blank = logits[..., blank : blank + 1]
    is_blank = torch.zeros(num_labels, dtype=torch.bool, device=logits.device)
    is_blank[blank] = True
    # Softmax over the non-blank columns: exclude the blank column with -inf.
    # Its softmax weight is exactly 0, so neither the value nor the gradient sees it.
    label_log_probs = logits.masked_fill(is_blank, float("-inf")).log_softmax(dim=-1)
    label_log_probs = label_log_probs + torch.nn.functional.logsigmoid(-z_blank)
    return torch.where(is_blank, torch.nn.functional.logsigmoid(z_blank), label_log_probs)


def apply_blank_penalty(scores: torch.Tensor, blank: int, penalty: float) -> torch.Tensor:
    """Adds ``penalty`` to the blank column and renormalises ("blank logit shift", Table 14).

    Acts on logits or on log-probabilities alike: ``log_softmax`` ignores a
    per-frame constant, so ``log_softmax(log_softmax(z) + penalty * e_blank)``
    equals ``log_softmax(z + penalty * e_blank)``. On blank-separated
    log-probabilities (eq. 29) it equals shifting the sigmoid's logit:
    renormalising gives p'(eps) = sigmoid(z_eps + penalty) and keeps p_A. A
    negative ``penalty`` (e.g. -10 as in Table 14) makes blank less likely.

    Args:
      scores: Tensor of shape (B, T, C): logits or log-probabilities.
      blank: blank/silence column.
      penalty: constant added to the blank column (in log space).

    Returns:
      Tensor of shape (B, T, C): normalised log-probabilities.
    """
    blank = check_blank(blank, scores.shape[-1])
    shift = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
    shift[blank] = penalty
    return (scores + shift).log_softmax(dim=-1)


class PosteriorScorer:
    """Posterior score matrices of a CTC/HMM model under a topology (eq. 6, Table 14).

    The model gives log posteriors (``model.log_probs(features, lengths)``, e.g.
    :meth:`fsalign.models.conformer.ConformerModel.log_probs`); the blank penalty is added to
    the blank/silence column before renormalising; the matrix carries the scales, the
    topology's graphs and the frame times of the model's frame rate. Every option is
    checked here, before any audio is read.

    Args:
      model: has ``log_probs(features, lengths) -> (log_probs, lengths)``, ``subsampling`` and
        ``blank``.
      topology: the topology the matrices are aligned / summed under.
      scales: α, β with its log prior (e.g. a checkpoint's corpus prior), γ.
      blank_penalty: added to the blank/silence log-probability (negative: less blank), finite.
      frame_shift_s: seconds per input feature frame.
      mismatch: allow transcripts that do not match the audio exactly (:mod:`fsalign.engine.mismatch`):
        the matrices get a garbage column (:mod:`fsalign.scores.mismatch`) and their graphs garbage at
        word boundaries and skippable words; None (default): the transcripts are taken as they are.
      long_audio: an utterance longer than ``long_audio.threshold_s`` is encoded in overlapping
        windows by a model that offers ``windowed_log_probs`` (:mod:`fsalign.models.windowed`), the
        others in one forward pass; a model without it encodes every utterance whole.

    Raises:
      FsalignError: a blank penalty that is not a finite number, a model without ``log_probs``,
        or a topology with another number of columns than the model's output.
    """

    def __init__(self, model, topology: Topology, scales: Scales = Scales(), blank_penalty: float = 0.0,
                 frame_shift_s: Seconds = 0.01, mismatch: Optional[MismatchOptions] = None,
                 long_audio: LongAudio = LongAudio()):
        check_option("blank penalty", blank_penalty, is_finite_number(blank_penalty), "a finite number")
        check_option("model", type(model).__name__, callable(getattr(model, "log_probs", None)),
                     "a model with log_probs(features, lengths)")
        num_labels = getattr(model, "num_labels", topology.num_labels)
        check_option("topology", topology, topology.num_labels == num_labels,
                     f"a topology with the model's {num_labels} columns")
        self.model, self.topology, self.scales = model, topology, scales
        self.blank_penalty = float(blank_penalty)
        self.frame_shift_s = float(frame_shift_s)
        self.subsampling = int(getattr(model, "subsampling", 1))
        check_option("mismatch", mismatch, mismatch is None or isinstance(mismatch, MismatchOptions),
                     "None or MismatchOptions")
        self.mismatch = mismatch
        check_option("long audio", long_audio, isinstance(long_audio, LongAudio), "LongAudio")
        self.long_audio = long_audio
        self.graph_topology = topology if mismatch is None else MismatchTopology(topology, mismatch)

    def settings(self) -> Dict[str, Any]:
        """Every option that determines the scores (recorded with alignments)."""
        return {"scores": "posterior", "topology": self.topology.name, "posterior_scale": self.scales.posterior_scale,
                "transition_scale": self.scales.transition_scale, "prior_scale": self.scales.prior_scale,
                "blank_penalty": self.blank_penalty, "frame_step_s": self.frame_shift_s * self.subsampling,
                **({} if self.mismatch is None else {"allow_mismatch": self.mismatch.settings()}),
                **({} if self.long_audio == LongAudio() else {"long_audio": dataclasses.asdict(self.long_audio)})}

    @torch.no_grad()
    def log_probs(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The model's log posteriors, blank penalty applied: Tensors of shape (B, T, C) and (B,).

        Long utterances (``long_audio``) go through the model's windowed forward, if it has one.
        """
        windowed = getattr(self.model, "windowed_log_probs", None)
        long = torch.tensor([self.long_audio.is_long(n * self.frame_shift_s) for n in feature_lengths.tolist()])
        if callable(windowed) and bool(long.any()):
            log_probs, lengths = self._mixed(features, feature_lengths, long, windowed)
        else:
            log_probs, lengths = self.model.log_probs(features, feature_lengths)
        if self.blank_penalty:
            log_probs = apply_blank_penalty(log_probs, self.model.blank, self.blank_penalty)
        return log_probs, lengths

    def _mixed(self, features, feature_lengths, long, windowed):
        """Long utterances windowed, the others in one forward pass, padded to one (B, T, C) batch."""
        parts = {}
        for mask, encode in ((long, windowed), (~long, None)):
            idx = mask.nonzero().flatten().tolist()
            if not idx:
                continue
            x, n = features[idx, :int(feature_lengths[idx].max())], feature_lengths[idx]
            if encode is None:
                out, lengths = self.model.log_probs(x, n)
            else:
                out, lengths = encode(x, n, self.long_audio, self.frame_shift_s)
            parts.update({b: (out[k, :int(lengths[k])], lengths[k]) for k, b in enumerate(idx)})
        rows = [parts[b] for b in range(len(long))]
        return (torch.nn.utils.rnn.pad_sequence([r for r, _ in rows], batch_first=True),
                torch.stack([n for _, n in rows]).long())

    def __call__(self, features: torch.Tensor, feature_lengths: torch.Tensor,
                 transcripts: Sequence[Sequence[Sequence[int]]], log_prior: Optional[torch.Tensor] = None
                 ) -> ScoreMatrix:
        """Score matrix of a batch.

        Args:
          features: Tensor of shape (B, T', F) on the model's device.
          feature_lengths: Tensor of shape (B,).
          transcripts: utterance -> words -> token ids.
          log_prior: overrides the scales' log prior for this batch (e.g. a sequence prior).
        """
        log_probs, lengths = self.log_probs(features, feature_lengths)
        scales = self.scales if log_prior is None else self.scales.replace(log_prior=log_prior)
        if self.mismatch is not None:
            log_probs, scales = with_garbage_column(log_probs, scales, self.topology.non_token_labels,
                                                    self.mismatch.garbage_score)
        graphs = self.graph_topology.compile(transcripts, device=log_probs.device)
        matrix = ScoreMatrix.from_posteriors(log_probs, lengths, graphs, scales, self.frame_shift_s, self.subsampling)
        if self.blank_penalty:
            matrix.blank_penalty = (int(self.model.blank), self.blank_penalty)
        return matrix
