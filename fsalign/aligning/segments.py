"""Posterior-mean boundaries over a long recording, one stretch between pauses at a time.

The posterior-mean boundaries (:meth:`fsalign.scores.matrix.ScoreMatrix.expected_boundaries`)
need a forward-backward pass whose memory grows with frames × chain states, which an hour of
audio with its one transcript does not fit. Over a long recording the best path is found first
(checkpointed Viterbi, bounded memory); it is then cut in the middle of its pauses (at least
:data:`MIN_GAP_FRAMES` frames of silence or blank between two words) into stretches of at least
:data:`SEGMENT_FRAMES` frames, and each stretch gets the posterior-mean boundaries of its own
words over its own frames. Each stretch starts and ends inside a pause, so this is the posterior
mean given that the paths pass through silence where the best path is in the middle of a pause;
where the model is sure of that pause, it is the whole recording's posterior mean. A stretch
without such a pause for over :data:`MAX_SEGMENT_FRAMES` frames keeps the best path's frame
edges.
"""
import dataclasses
import logging
from typing import List, Optional, Tuple

from fsalign.results.alignment import Alignment
from fsalign.scores.matrix import ScoreMatrix

__all__ = ["SEGMENT_FRAMES", "MAX_SEGMENT_FRAMES", "MIN_GAP_FRAMES", "pause_segments",
           "expected_boundaries_by_segments"]

logger = logging.getLogger(__name__)

SEGMENT_FRAMES = 750
"""Frames a stretch has at least before it is cut at the next pause (30 s of 40 ms frames)."""

MAX_SEGMENT_FRAMES = 7500
"""Frames beyond which a stretch without a pause keeps the best path's edges (5 minutes of 40 ms frames)."""

MIN_GAP_FRAMES = 2
"""Frames of silence/blank between two words of the best path for a cut between them (one either side)."""


def pause_segments(ali: Alignment, num_frames: int, target: Optional[int] = None,
                   min_gap: int = MIN_GAP_FRAMES) -> List[Tuple[int, int, int, int]]:
    """Stretches ``(first frame, end frame, first word, end word)`` of a best path, cut in its pauses.

    Consecutive, covering frames ``[0, num_frames)`` and every word (in transcript order); a cut
    falls in the middle of a gap of at least ``min_gap`` frames between two words, the first such
    gap after the stretch has ``target`` frames (None: :data:`SEGMENT_FRAMES`).
    """
    target = SEGMENT_FRAMES if target is None else target
    words = sorted(ali.words, key=lambda w: w.index)
    segments, first_frame, first_word = [], 0, 0
    for i in range(len(words) - 1):
        gap = words[i + 1].start - words[i].end
        cut = words[i].end + gap // 2
        if gap >= min_gap and cut - first_frame >= target:
            segments.append((first_frame, cut, first_word, i + 1))
            first_frame, first_word = cut, i + 1
    segments.append((first_frame, num_frames, first_word, len(words)))
    return segments


def expected_boundaries_by_segments(matrix: ScoreMatrix, row: int, ali: Alignment, target: Optional[int] = None,
                                    longest: Optional[int] = None) -> Tuple[List[float], List[float]]:
    """Start and end frame of every transcript position of utterance ``row``, stretch by stretch.

    Args:
      matrix: the score matrix (a built-in chain topology, no mismatch).
      row: the utterance of ``matrix``.
      ali: its best path (every word aligned).
      target: :func:`pause_segments`' ``target``.
      longest: a stretch longer than this keeps the best path's frame edges (None:
        :data:`MAX_SEGMENT_FRAMES`).

    Returns:
      (starts, ends): lists of (fractional) frames, one per transcript position, as
      ``matrix.expected_boundaries()`` gives them for the whole utterance.
    """
    longest = MAX_SEGMENT_FRAMES if longest is None else longest
    tokens = sorted(ali.tokens, key=lambda t: t.position)
    starts, ends = [float(t.start) for t in tokens], [float(t.end) for t in tokens]
    words = sorted(ali.words, key=lambda w: w.index)
    transcript = matrix.graphs.transcripts[row]
    topology = matrix.graphs.topology
    scales = matrix.scales
    if scales.log_prior is not None and scales.log_prior.dim() == 2:
        scales = scales.replace(log_prior=scales.log_prior[row:row + 1])
    for f0, f1, w0, w1 in pause_segments(ali, int(matrix.lengths[row]), target):
        if f1 - f0 > longest:
            logger.info("%d frames without a pause of %d frames: the best path's boundaries there", f1 - f0,
                        MIN_GAP_FRAMES)
            continue
        p0, p1 = words[w0].first_token, words[w1 - 1].last_token + 1
        part = dataclasses.replace(matrix, scores=matrix.scores[row:row + 1, f0:f1],
                                   lengths=matrix.lengths.new_tensor([f1 - f0]), scales=scales, tokens=None,
                                   graphs=topology.compile([transcript[w0:w1]], device=matrix.scores.device))
        part_starts, part_ends = (x[0, :p1 - p0].tolist() for x in part.expected_boundaries())
        for j, (s, e) in enumerate(zip(part_starts, part_ends)):
            if s == s and e == e:  # (NaN: keep the frame edges)
                starts[p0 + j], ends[p0 + j] = f0 + s, f0 + e
    return starts, ends
