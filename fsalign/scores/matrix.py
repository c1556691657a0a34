"""The score matrix: dense scores of a batch together with everything needed to sum or align them.

Dimension symbols used in this module:
  B: utterances in a batch
  T: frames of the score matrix (encoder frames for posteriors, input frames for gradient scores)
  C: score-matrix columns

A :class:`ScoreMatrix` is to fsalign what a distribution object is to PyTorch-Struct: it
bundles the potentials (the (B, T, C) scores the engine reads), the lengths, the training
graphs (topology + transcripts) and the path-score scales, and offers the full sum
(:meth:`~ScoreMatrix.total`, :meth:`~ScoreMatrix.loss`), the marginals (the soft
alignment) and the best paths, together with the frame step and time offset that turn
frames into seconds. Scorers build them (:class:`fsalign.scores.posterior.PosteriorScorer`,
:class:`fsalign.scores.gradscore.GradientScorer`); nothing downstream asks which kind of
score a matrix holds.
"""
import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from fsalign.engine.chain import graphs_chain, resolve_engine
from fsalign.engine.fullsum import occupancies, total_scores
from fsalign.engine.occupancy import expected_position_frames
from fsalign.engine.scales import Scales
from fsalign.engine.topology import TrainingGraphs
from fsalign.engine.viterbi import best_paths
from fsalign.results.alignment import Alignment, frame_seconds, frame_time_offset
from fsalign.results.confidence import label_probabilities
from fsalign.util import Seconds, valid_frame_mask

__all__ = ["ScoreMatrix"]


@dataclass
class ScoreMatrix:
    """Dense scores of a batch and what goes with them.

    Attributes:
      scores: Tensor of shape (B, T, C): the matrix the engine reads (columns = the
        topology's labels). Posteriors: log-probabilities; gradient scores: GradScore(Ext).
      lengths: Tensor of shape (B,), int64: valid frames of each utterance.
      graphs: the B training graphs (topology + transcripts).
      scales: α, β with the log prior, γ of the path score.
      frame_step_s: seconds from one frame of ``scores`` to the next.
      time_offset_s: where frame 0 starts on the audio (see
        :func:`fsalign.results.alignment.frame_time_offset`).
      tokens: per utterance, the token id of each transcript position when the graphs'
        tokens are not token ids (gradient scores align transcript *positions*); None when
        they are.
      name: what the scores are, for plots and messages (e.g. "log posterior", "GradScoreExt").
      engine: which engine sums and aligns (:data:`fsalign.engine.chain.ENGINES`): "auto" (the
        exact chain kernels for the built-in topologies, k2 otherwise), "chain" or "k2".
      blank_penalty: ``(column, penalty)`` the scorer added to a column of the model's log
        posteriors before renormalising (:func:`fsalign.scores.posterior.apply_blank_penalty`), so
        that :meth:`frame_confidences` can give the model's own posteriors; None: none.
    """

    scores: torch.Tensor
    lengths: torch.Tensor
    graphs: TrainingGraphs
    scales: Scales = Scales()
    frame_step_s: Seconds = 0.01
    time_offset_s: Seconds = 0.0
    tokens: Optional[List[List[int]]] = None
    name: str = "scores"
    engine: str = "auto"
    blank_penalty: Optional[Tuple[int, float]] = None

    @classmethod
    def from_posteriors(cls, log_probs: torch.Tensor, lengths: torch.Tensor, graphs: TrainingGraphs,
                        scales: Scales = Scales(), frame_shift_s: Seconds = 0.01,
                        subsampling: int = 1) -> "ScoreMatrix":
        """Posteriors at the encoder frame rate.

        Step ``frame_shift_s * subsampling``, offset of :func:`~fsalign.results.alignment.frame_time_offset`
        (the one place both are derived).

        Args:
          log_probs: Tensor of shape (B, T, C), normalised log-probabilities.
          lengths: Tensor of shape (B,), encoder frames.
          graphs: training graphs of the topology to score with.
          scales: the path-score scales.
          frame_shift_s: seconds per input feature frame.
          subsampling: input frames per encoder frame.
        """
        return cls(log_probs, torch.as_tensor(lengths).long(), graphs, scales, frame_shift_s * subsampling,
                   frame_time_offset(frame_shift_s, subsampling), None, "log posterior")

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def min_frames(self) -> torch.Tensor:
        """Tensor of shape (B,): frames each transcript needs at least under the topology."""
        return self.graphs.min_frames

    @property
    def blank(self) -> int:
        """The blank/silence column (the topology's first non-token label)."""
        return self.graphs.topology.non_token_labels[0]

    def valid(self) -> torch.Tensor:
        """Bool Tensor of shape (B, T): the valid frames."""
        return valid_frame_mask(self.lengths.to(self.scores.device), self.scores.shape[1], batch_size=len(self))

    def has_nan(self) -> torch.Tensor:
        """Bool Tensor of shape (B,): the valid part of an utterance's scores holds a NaN."""
        return (torch.isnan(self.scores) & self.valid()[:, :, None]).flatten(1).any(1)

    def total(self) -> torch.Tensor:
        """Log-partition (full sum, eq. 6 inside the log), Tensor of shape (B,), float64, differentiable.

        ``-inf`` where an utterance is too short for its transcript.
        """
        return total_scores(self.scores, self.lengths, self.graphs, self.scales, self.engine)

    def loss(self) -> torch.Tensor:
        """Full-sum NLL (eq. 5, 6), Tensor of shape (B,), float64; ``+inf`` where infeasible."""
        return -self.total()

    def marginals(self) -> torch.Tensor:
        """Soft alignment (eq. 9): Tensor of shape (B, T, C), the gradient of :meth:`total`."""
        return occupancies(self.scores, self.lengths, self.graphs, self.scales, self.engine)

    def expected_boundaries(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Posterior-mean start and end frame of every transcript position (:mod:`fsalign.engine.occupancy`).

        Returns:
          (starts, ends): float64 Tensors of shape (B, S), in (fractional) frames; NaN beyond a
          transcript and for utterances too short for theirs.

        Raises:
          FsalignError: graphs that are not a built-in chain (a custom or mismatch topology).
        """
        resolve_engine(self.graphs, "chain")
        chain = graphs_chain(self.graphs, self.scales.transition_scale, self.scores.device)
        return expected_position_frames(self.scales.detach().dense(self.scores.detach()), self.lengths, chain)

    def frame_seconds(self, frame: float) -> Seconds:
        """Seconds of a frame boundary (a whole or fractional frame index), at least 0."""
        return frame_seconds(frame, self.frame_step_s, self.time_offset_s)

    def best_paths(self, on_infeasible: str = "skip") -> List[Optional[Alignment]]:
        """Viterbi alignment of every utterance (None where too short, with ``on_infeasible="skip"``).

        Token spans carry token ids (for gradient scores, the ids of :attr:`tokens`).
        """
        alignments = best_paths(self.scores, self.lengths, self.graphs, self.scales, on_infeasible, self.engine)
        if self.tokens is not None:
            for b, ali in enumerate(alignments):
                if ali is not None:
                    ids = self.tokens[b]
                    ali.tokens = [dataclasses.replace(t, token=int(ids[t.position])) for t in ali.tokens]
        return alignments

    def seconds(self, span) -> Tuple[Seconds, Seconds]:
        """(start, end) of a :class:`~fsalign.results.alignment.TokenSpan` or ``WordSpan`` in seconds."""
        return span.seconds(self.frame_step_s, offset_s=self.time_offset_s)

    def word_times(self, alignment: Alignment) -> List[Tuple[Seconds, Seconds]]:
        """(start, end) in seconds of every word of ``alignment``."""
        return [self.seconds(w) for w in alignment.words]

    def position_columns(self, b: int) -> List[int]:
        """Columns of utterance ``b`` in transcript order: the blank, then one per token position.

        For the built-in topologies a transcript position's column is its token id (posteriors)
        or its position (gradient scores); used to draw the rows that matter.
        """
        return [self.blank] + [t for w in self.graphs.transcripts[b] for t in w]

    def position_tokens(self, b: int) -> List[int]:
        """Token ids of utterance ``b``'s transcript positions, in order."""
        if self.tokens is not None:
            return list(self.tokens[b])
        return [t for w in self.graphs.transcripts[b] for t in w]

    def distribution_columns(self, b: int) -> int:
        """K: the leading columns of utterance ``b`` that a frame's probability is normalised over.

        Gradient scores: the blank and the utterance's own transcript positions; posteriors: the
        model's columns (every column but the garbage column of a topology allowing mismatch,
        :class:`~fsalign.engine.mismatch.MismatchTopology`, which is the last).
        """
        if self.tokens is not None:
            return min(len(self.tokens[b]) + 1, int(self.scores.shape[2]))
        garbage = getattr(self.graphs.topology, "garbage", None)
        return int(self.scores.shape[2]) if garbage is None else int(garbage)

    def frame_confidences(self, b: int, labels: torch.Tensor) -> torch.Tensor:
        """The frame probability of every frame's label (:mod:`fsalign.results.confidence`).

        ``softmax`` over the :meth:`distribution_columns` of frame ``t`` of utterance ``b`` (the
        blank penalty taken out again), at ``labels[t]``; a label outside them (garbage) gets NaN.

        Args:
          b: the utterance.
          labels: LongTensor of shape (T_b,), e.g. ``Alignment.labels``.

        Returns:
          Tensor of shape (T_b,), float64.
        """
        K = self.distribution_columns(b)
        scores = self.scores[b, : int(self.lengths[b]), :K]
        if self.blank_penalty is not None and self.blank_penalty[1] and self.blank_penalty[0] < K:
            column, penalty = self.blank_penalty
            shift = torch.zeros(K, dtype=scores.dtype, device=scores.device)
            shift[column] = penalty
            scores = scores - shift
        return label_probabilities(scores, labels)

    def select(self, indices: Sequence[int]) -> "ScoreMatrix":
        """The utterances ``indices`` only (frames trimmed to the longest of them)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        lengths = self.lengths[idx]
        longest = int(lengths.max()) if len(idx) else 0
        scales = self.scales
        if scales.log_prior is not None and scales.log_prior.dim() == 2:
            scales = scales.replace(log_prior=scales.log_prior[idx.to(scales.log_prior.device)])
        tokens = None if self.tokens is None else [self.tokens[i] for i in idx.tolist()]
        return dataclasses.replace(self, scores=self.scores[idx.to(self.scores.device), :longest], lengths=lengths,
                                   graphs=self.graphs[idx], scales=scales, tokens=tokens)
