"""Alignments: frame labels, token spans and word spans, and their times.

Dimension symbols used in this module:
  T: frames of one utterance

Spans are in frames of the score matrix, ``start`` inclusive and ``end``
exclusive (as torchaudio's ``TokenSpan``). Times in seconds are
``frame * frame_shift_s * subsampling + offset_s`` (clipped at 0): a word's end time is
the end of its last frame. ``offset_s`` places each frame on the audio it was computed
from; :func:`frame_time_offset` gives it for subsampled encoder frames.
"""
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from fsalign.util import Seconds

__all__ = ["TokenSpan", "WordSpan", "UntranscribedSpan", "Alignment", "Seconds", "spans_from_path", "frame_time_offset",
           "frame_seconds"]



def frame_time_offset(frame_shift_s: Seconds, subsampling: int = 1) -> Seconds:
    """Where encoder frame 0 starts relative to ``0 * frame_shift_s * subsampling``, in seconds.

    Feature frame ``k`` of lhotse's (Kaldi-compatible, ``snip_edges=False``) extractors is
    centred at ``(k + 1/2) * frame_shift_s``, so with ``subsampling == 1`` the span
    ``[k, k + 1) * frame_shift_s`` is centred on its audio and the offset is 0. A subsampling
    frontend of centred convolutions (kernel ``2p + 1``, padding ``p``, stride ``s``; every
    frontend in :mod:`fsalign.models`) centres encoder frame ``u`` on feature frame
    ``subsampling * u``, i.e. at ``(subsampling * u + 1/2) * frame_shift_s``; a span of
    ``subsampling * frame_shift_s`` centred there starts ``(subsampling - 1) / 2`` feature
    frames before ``subsampling * u * frame_shift_s``. Returns ``-(subsampling - 1) / 2 *
    frame_shift_s`` (-15 ms for 10 ms features and factor 4, -25 ms for factor 6).
    """
    return -(subsampling - 1) / 2 * frame_shift_s


def frame_seconds(frame: float, frame_step_s: Seconds, offset_s: Seconds = 0.0) -> Seconds:
    """Seconds of a frame boundary (whole or fractional frame): ``frame * frame_step_s + offset_s``, at least 0."""
    return max(0.0, float(frame) * frame_step_s + offset_s)


class _FrameSpan:
    """Frames [start, end) and their times; mixed into the span dataclasses."""

    start: int
    end: int

    @property
    def num_frames(self) -> int:
        return self.end - self.start

    def seconds(self, frame_shift_s: Seconds, subsampling: int = 1, offset_s: Seconds = 0.0) -> Tuple[Seconds, Seconds]:
        """(start, end) in seconds: ``frame * frame_shift_s * subsampling + offset_s``, at least 0."""
        step = frame_shift_s * subsampling
        return frame_seconds(self.start, step, offset_s), frame_seconds(self.end, step, offset_s)


@dataclass(frozen=True)
class TokenSpan(_FrameSpan):
    """One transcript token in an alignment.

    Attributes:
      position: index of the token in the flattened transcript (0-based).
      word: index of its word in the transcript.
      token: token id (score-matrix column for the built-in topologies).
      start: first frame (inclusive).
      end: last frame + 1 (exclusive).
    """

    position: int
    word: int
    token: int
    start: int
    end: int


@dataclass(frozen=True)
class WordSpan(_FrameSpan):
    """One word: from the first frame of its first token to the end of its last token.

    Attributes:
      index: word index in the transcript.
      start: first frame (inclusive).
      end: last frame + 1 (exclusive).
      first_token: position of its first token; last_token: of its last token.
    """

    index: int
    start: int
    end: int
    first_token: int
    last_token: int


@dataclass(frozen=True)
class UntranscribedSpan(_FrameSpan):
    """Frames that a transcript-mismatch alignment gave to garbage (untranscribed speech, noise).

    Attributes:
      start: first frame (inclusive).
      end: last frame + 1 (exclusive).
    """

    start: int
    end: int


@dataclass
class Alignment:
    """The best path of one utterance.

    Attributes:
      labels: LongTensor of shape (T,): the score-matrix column of every frame.
      score: the scaled best-path score (posterior, prior and transition terms).
      tokens: one span per transcript token, in transcript order (of the aligned words only
        where the graphs allow skipping words, :mod:`fsalign.engine.mismatch`).
      words: one span per word, in transcript order (the aligned words only, as ``tokens``).
      skipped: indices of the transcript words the path skipped (no frames, no span).
      untranscribed: the spans of garbage frames (untranscribed speech), in time order.
    """

    labels: torch.Tensor
    score: float
    tokens: List[TokenSpan] = field(default_factory=list)
    words: List[WordSpan] = field(default_factory=list)
    skipped: List[int] = field(default_factory=list)
    untranscribed: List[UntranscribedSpan] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        """Number of frames T (the length of ``labels``)."""
        return int(self.labels.shape[0])

    def word_times(self, frame_shift_s: Seconds, subsampling: int = 1,
                   offset_s: Seconds = 0.0) -> List[Tuple[Seconds, Seconds]]:
        """(start, end) in seconds of every word (see :meth:`TokenSpan.seconds`)."""
        return [w.seconds(frame_shift_s, subsampling, offset_s) for w in self.words]

    def token_times(self, frame_shift_s: Seconds, subsampling: int = 1,
                   offset_s: Seconds = 0.0) -> List[Tuple[Seconds, Seconds]]:
        """(start, end) in seconds of every token (see :meth:`TokenSpan.seconds`)."""
        return [t.seconds(frame_shift_s, subsampling, offset_s) for t in self.tokens]

    def to_dict(self) -> dict:
        """JSON-serialisable dict of the fields (inverse of :meth:`from_dict`)."""
        return {
            "labels": self.labels.tolist(),
            "score": self.score,
            "tokens": [asdict(t) for t in self.tokens],
            "words": [asdict(w) for w in self.words],
            "skipped": list(self.skipped),
            "untranscribed": [asdict(u) for u in self.untranscribed],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Alignment":
        """Rebuild an alignment from :meth:`to_dict` output."""
        return cls(
            torch.tensor(d["labels"], dtype=torch.long),
            float(d["score"]),
            [TokenSpan(**t) for t in d["tokens"]],
            [WordSpan(**w) for w in d["words"]],
            [int(w) for w in d.get("skipped", [])],
            [UntranscribedSpan(**u) for u in d.get("untranscribed", [])],
        )


def spans_from_path(
    labels: np.ndarray,
    out_symbols: np.ndarray,
    transcript: Sequence[Sequence[int]],
    non_token_labels: Sequence[int],
    silence_symbol: Optional[int],
) -> Tuple[List[TokenSpan], List[WordSpan]]:
    """Token and word spans of one best path.

    A token starts on the frame whose arc outputs it; its frames are the frames
    up to the next token output that are not aligned to a non-token column
    (blank, silence).

    Args:
      labels: array of shape (T,), the column of every frame.
      out_symbols: array of shape (T,), the output symbol of every frame's arc
        (0 for none).
      transcript: words -> token ids.
      non_token_labels: blank/silence columns.
      silence_symbol: the topology's word-boundary silence symbol, or None.
    """
    tokens = [t for w in transcript for t in w]
    word_of = [i for i, w in enumerate(transcript) for _ in w]
    starts_token = out_symbols > 0
    if silence_symbol is not None:
        starts_token &= out_symbols != silence_symbol
    position = np.cumsum(starts_token) - 1
    in_token = ~np.isin(labels, np.asarray(non_token_labels)) & (position >= 0)
    frames = np.nonzero(in_token)[0]
    pos = position[frames]
    if len(np.unique(pos)) != len(tokens) or (len(tokens) and pos.max() != len(tokens) - 1):
        raise RuntimeError(
            "best path does not visit every transcript token once; the topology FST does not "
            "follow fsalign's conventions (see Topology.from_fst)"
        )
    # first and last frame of each position (frames are sorted)
    bounds = np.searchsorted(pos, np.arange(len(tokens) + 1))
    starts, ends = frames[bounds[:-1]].tolist(), (frames[bounds[1:] - 1] + 1).tolist()
    token_spans = [TokenSpan(i, word_of[i], tokens[i], starts[i], ends[i]) for i in range(len(tokens))]
    word_spans = []
    i = 0
    for w, word in enumerate(transcript):
        first, last = token_spans[i], token_spans[i + len(word) - 1]
        word_spans.append(WordSpan(w, first.start, last.end, first.position, last.position))
        i += len(word)
    return token_spans, word_spans
