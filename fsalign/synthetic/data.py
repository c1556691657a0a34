"""Synthetic alignment data of section 6.1 (eq. 26).

A ground-truth alignment is sampled first and the input features are built
from it, so every sample knows its reference alignment and word boundaries.

Sampling one utterance (all draws from one ``numpy.random.Generator``):

1. ``N_words ~ U{num_words[0] .. num_words[1]}``; each word uniformly from
   ``words``; each word maps to its characters (tokens).
2. For every token, its repetitions ``~ U{repetitions[0] .. repetitions[1]}``;
   ``T_A`` is the sum of all repetitions.
3. ``r_sil ~ U[silence_factor[0], silence_factor[1]]`` (a constant when both
   ends agree) and ``T_eps = floor(r_sil * T_A)`` silence frames. The floor is
   what reproduces the paper's "21 % silence" for ``N_rep = 2, r_sil = 0.3,
   N_words in {1, 2, 3}`` (rounding to nearest gives 23 %).
4. The ``T_eps`` frames are spread over the ``N_words + 1`` gaps (before the
   first word, between words, after the last word):

   * ``"even"`` (default): every gap gets ``T_eps // (N_words + 1)`` frames and
     the remaining ``T_eps mod (N_words + 1)`` frames go to that many distinct
     gaps drawn uniformly without replacement;
   * ``"random"``: every silence frame independently picks one of the gaps
     uniformly (a multinomial draw), so gaps can be empty or long.

5. Features (eq. 26): ``x[t, i] = (1 - sigma) * [i == y_t] + sigma * xi[t, i]``
   with ``xi ~ N(0, 1)`` i.i.d. and ``D = |Y| = C``.

Column 0 is ε (blank/silence); columns 1..|A| are the characters in order of
first appearance in ``words`` ("helo world howe are you" gives
h e l o w r d a y u, |A| = 10, C = 11).

Dimension symbols legend:
  B: batch size
  T: frames (padded length in a batch)
  D: feature dimension (= C)
  C: alignment labels (score-matrix columns), ε included
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from fsalign.errors import FsalignError

__all__ = [
    "DEFAULT_WORDS",
    "EPSILON",
    "PAD_LABEL",
    "SyntheticConfig",
    "SyntheticUtterance",
    "SyntheticBatch",
    "SyntheticGenerator",
    "collate",
]

DEFAULT_WORDS: Tuple[str, ...] = ("helo", "world", "howe", "are", "you")
EPSILON = 0
"""Column of ε (blank for CTC, silence for HMM)."""
PAD_LABEL = -1
"""Alignment label on padding frames of a :class:`SyntheticBatch`."""

SILENCE_PLACEMENTS = ("even", "random")


def _int_range(value, what: str) -> Tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    lo, hi = (int(v) for v in value)
    if lo > hi:
        raise FsalignError(f"{what} must be (min, max) with min <= max, got ({lo}, {hi})")
    return lo, hi


def _float_range(value, what: str) -> Tuple[float, float]:
    if isinstance(value, (int, float, np.floating, np.integer)):
        value = (float(value), float(value))
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise FsalignError(f"{what} must be (min, max) with min <= max, got ({lo}, {hi})")
    return lo, hi


@dataclass(frozen=True)
class SyntheticConfig:
    """Distribution of the synthetic data (section 6.1).

    Attributes:
      words: the vocabulary; each word is spelled into its characters.
      num_words: (min, max) words per utterance, inclusive; an int means fixed.
      repetitions: (min, max) frames per token, inclusive; an int means fixed.
      silence_factor: (min, max) of r_sil, uniform; a float means fixed.
      noise_scale: σ_ξ of eq. 26.
      silence_placement: ``"even"`` or ``"random"`` (see the module docstring).
    """

    words: Tuple[str, ...] = DEFAULT_WORDS
    num_words: Tuple[int, int] = (1, 1)
    repetitions: Tuple[int, int] = (10, 10)
    silence_factor: Tuple[float, float] = (1.0, 1.0)
    noise_scale: float = 0.0
    silence_placement: str = "even"

    def __post_init__(self):
        words = tuple(str(w) for w in self.words)
        if not words or any(not w for w in words):
            raise FsalignError(f"words must be a non-empty list of non-empty strings, got {self.words!r}")
        object.__setattr__(self, "words", words)
        nw = _int_range(self.num_words, "num_words")
        reps = _int_range(self.repetitions, "repetitions")
        sil = _float_range(self.silence_factor, "silence_factor")
        if nw[0] < 1:
            raise FsalignError(f"num_words must be >= 1 (an utterance needs frames), got {nw}")
        if reps[0] < 1:
            raise FsalignError(f"repetitions must be >= 1, got {reps}")
        if sil[0] < 0:
            raise FsalignError(f"silence_factor must be >= 0, got {sil}")
        if not 0.0 <= float(self.noise_scale):
            raise FsalignError(f"noise_scale must be >= 0, got {self.noise_scale}")
        if self.silence_placement not in SILENCE_PLACEMENTS:
            raise FsalignError(
                f"silence_placement must be one of {SILENCE_PLACEMENTS}, got {self.silence_placement!r}"
            )
        object.__setattr__(self, "num_words", nw)
        object.__setattr__(self, "repetitions", reps)
        object.__setattr__(self, "silence_factor", sil)
        object.__setattr__(self, "noise_scale", float(self.noise_scale))

    @property
    def alphabet(self) -> Tuple[str, ...]:
        """The characters A, in order of first appearance in ``words``."""
        seen: Dict[str, None] = {}
        for w in self.words:
            for ch in w:
                seen.setdefault(ch, None)
        return tuple(seen)

    @property
    def num_labels(self) -> int:
        """C = |A| + 1 (ε in column 0)."""
        return len(self.alphabet) + 1

    @property
    def feature_dim(self) -> int:
        """D = C."""
        return self.num_labels

    @property
    def lexicon(self) -> List[List[int]]:
        """Token ids (columns 1..|A|) of every word, parallel to ``words``."""
        col = {ch: i + 1 for i, ch in enumerate(self.alphabet)}
        return [[col[ch] for ch in w] for w in self.words]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable dict of the fields, tuples as lists (inverse of :meth:`from_dict`)."""
        d = asdict(self)
        d["words"] = list(self.words)
        d["num_words"] = list(self.num_words)
        d["repetitions"] = list(self.repetitions)
        d["silence_factor"] = list(self.silence_factor)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SyntheticConfig":
        """Rebuild a config from :meth:`to_dict` output (lists become tuples again)."""
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


@dataclass
class SyntheticUtterance:
    """One sample with its ground truth.

    Attributes:
      features: array of shape (T, D), float32 (eq. 26).
      alignment: array of shape (T,), int64: the reference label per frame.
      word_ids: indices into ``config.words``.
      transcript: words -> token ids (columns), the format ``Topology.compile`` takes.
      word_spans: (start, end) frames of every word, end exclusive.
      token_spans: (start, end) frames of every token occurrence, end exclusive.
      silence_factor: the r_sil drawn for this utterance.
    """

    features: np.ndarray
    alignment: np.ndarray
    word_ids: List[int]
    transcript: List[List[int]]
    word_spans: List[Tuple[int, int]]
    token_spans: List[Tuple[int, int]]
    silence_factor: float

    @property
    def num_frames(self) -> int:
        """Number of frames T (the length of ``alignment``)."""
        return int(self.alignment.shape[0])


@dataclass
class SyntheticBatch:
    """A padded batch.

    Attributes:
      features: Tensor of shape (B, T, D), float32, zero on padding frames.
      lengths: Tensor of shape (B,), int64.
      alignment: Tensor of shape (B, T), int64, ``PAD_LABEL`` on padding frames.
      transcripts: B transcripts (words -> token ids).
      word_spans: B lists of (start, end) frames, end exclusive.
      word_ids: B lists of indices into ``config.words``.
    """

    features: torch.Tensor
    lengths: torch.Tensor
    alignment: torch.Tensor
    transcripts: List[List[List[int]]]
    word_spans: List[List[Tuple[int, int]]]
    word_ids: List[List[int]]

    def __len__(self) -> int:
        return len(self.transcripts)

    def to(self, device) -> "SyntheticBatch":
        """Returns the batch with its tensors on ``device`` (transcripts and spans are shared, not copied)."""
        return SyntheticBatch(
            self.features.to(device), self.lengths.to(device), self.alignment.to(device),
            self.transcripts, self.word_spans, self.word_ids,
        )


def collate(utterances: Sequence[SyntheticUtterance], device=None) -> SyntheticBatch:
    """Pads utterances into a :class:`SyntheticBatch` (on ``device``, default CPU)."""
    if not utterances:
        raise FsalignError("collate needs at least one utterance, got none")
    lengths = [u.num_frames for u in utterances]
    T = max(lengths)
    D = utterances[0].features.shape[1]
    feats = np.zeros((len(utterances), T, D), np.float32)
    ali = np.full((len(utterances), T), PAD_LABEL, np.int64)
    for b, u in enumerate(utterances):
        feats[b, : u.num_frames] = u.features
        ali[b, : u.num_frames] = u.alignment
    batch = SyntheticBatch(
        torch.from_numpy(feats),
        torch.tensor(lengths, dtype=torch.int64),
        torch.from_numpy(ali),
        [u.transcript for u in utterances],
        [list(u.word_spans) for u in utterances],
        [list(u.word_ids) for u in utterances],
    )
    return batch if device is None else batch.to(device)


class SyntheticGenerator:
    """Samples utterances of a :class:`SyntheticConfig`, deterministically per seed.

    All randomness comes from one ``numpy.random.Generator`` seeded with
    ``seed``; the global numpy/torch RNGs are never touched. Utterances are
    drawn a group at a time (:meth:`sample_many`, :meth:`batch`), vectorised:
    the same seed and the same sequence of calls give the same data.

    Args:
      config: the data distribution.
      seed: seed of the generator.
    """

    def __init__(self, config: SyntheticConfig, seed: int):
        self.config = config
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        lex = config.lexicon
        self._word_len = np.asarray([len(w) for w in lex], np.int64)
        self._word_start = np.concatenate([[0], np.cumsum(self._word_len)[:-1]])
        self._flat_lex = np.asarray([t for w in lex for t in w], np.int64)

    # ------------------------------------------------------------------ drawing
    def _draw(self, n: int) -> Dict[str, np.ndarray]:
        """Draws ``n`` utterances as flat arrays (see the module docstring for the steps)."""
        cfg, rng = self.config, self.rng
        n_words = rng.integers(cfg.num_words[0], cfg.num_words[1] + 1, size=n)
        word_ids = rng.integers(0, len(cfg.words), size=int(n_words.sum()))
        word_utt = np.repeat(np.arange(n), n_words)
        word_pos = np.arange(len(word_ids)) - np.repeat(np.cumsum(n_words) - n_words, n_words)
        wlen = self._word_len[word_ids]
        # tokens of all words, in order
        tok_word = np.repeat(np.arange(len(word_ids)), wlen)
        tok_in_word = np.arange(len(tok_word)) - np.repeat(np.cumsum(wlen) - wlen, wlen)
        tokens = self._flat_lex[self._word_start[word_ids][tok_word] + tok_in_word]
        reps = rng.integers(cfg.repetitions[0], cfg.repetitions[1] + 1, size=len(tokens))
        t_a = np.bincount(word_utt[tok_word], weights=reps, minlength=n).astype(np.int64)
        lo, hi = cfg.silence_factor
        r_sil = np.full(n, lo) if lo == hi else rng.uniform(lo, hi, size=n)
        # the epsilon guards floor() against 0.29 * 100 = 28.999999999999996
        t_eps = np.floor(r_sil * t_a + 1e-9).astype(np.int64)
        num_gaps = n_words + 1
        gap_utt = np.repeat(np.arange(n), num_gaps)
        gap_first = np.cumsum(num_gaps) - num_gaps
        gap_pos = np.arange(len(gap_utt)) - gap_first[gap_utt]
        if cfg.silence_placement == "even":
            gaps = (t_eps // num_gaps)[gap_utt]
            rest = (t_eps % num_gaps)[gap_utt]
            keys = rng.random(len(gap_utt))
            order = np.lexsort((keys, gap_utt))  # gaps of each utterance by random key
            rank = np.empty(len(gap_utt), np.int64)
            rank[order] = np.arange(len(gap_utt)) - gap_first[gap_utt[order]]
            gaps = gaps + (rank < rest)
        else:  # every silence frame picks a gap uniformly
            frame_utt = np.repeat(np.arange(n), t_eps)
            pick = np.floor(rng.random(len(frame_utt)) * num_gaps[frame_utt]).astype(np.int64)
            gaps = np.bincount(gap_first[frame_utt] + pick, minlength=len(gap_utt))
        # segments in time order: utterance, then slot (gap k before word k), then token index
        seg_utt = np.concatenate([gap_utt, word_utt[tok_word]])
        seg_slot = np.concatenate([2 * gap_pos, 2 * word_pos[tok_word] + 1])
        seg_sub = np.concatenate([np.zeros(len(gap_utt), np.int64), tok_in_word])
        seg_label = np.concatenate([np.full(len(gap_utt), EPSILON, np.int64), tokens])
        seg_len = np.concatenate([gaps, reps])
        seg_tok = np.concatenate([np.full(len(gap_utt), -1, np.int64), np.arange(len(tokens))])
        order = np.lexsort((seg_sub, seg_slot, seg_utt))
        seg_len, seg_label, seg_tok = seg_len[order], seg_label[order], seg_tok[order]
        lengths = t_a + t_eps
        utt_offset = np.cumsum(lengths) - lengths
        seg_start = np.cumsum(seg_len) - seg_len - utt_offset[seg_utt[order]]
        tok_start = np.empty(len(tokens), np.int64)
        is_tok = seg_tok >= 0
        tok_start[seg_tok[is_tok]] = seg_start[is_tok]
        alignment = np.repeat(seg_label, seg_len)
        features = self._features(alignment)
        return dict(
            n_words=n_words, word_ids=word_ids, wlen=wlen, tokens=tokens, reps=reps, tok_start=tok_start,
            r_sil=r_sil, lengths=lengths, alignment=alignment, features=features,
        )

    def _features(self, alignment: np.ndarray) -> np.ndarray:
        """Eq. 26 for alignments of shape (N,): features of shape (N, D), float32."""
        D = self.config.feature_dim
        sigma = self.config.noise_scale
        onehot = np.zeros((len(alignment), D), np.float32)
        onehot[np.arange(len(alignment)), alignment] = 1.0
        if sigma == 0.0:
            return onehot
        noise = self.rng.standard_normal((len(alignment), D), dtype=np.float32)
        return ((1.0 - sigma) * onehot + sigma * noise).astype(np.float32)

    # ------------------------------------------------------------------ public
    def sample_many(self, n: int) -> List[SyntheticUtterance]:
        """Draws ``n`` utterances."""
        d = self._draw(int(n))
        lex = self.config.lexicon
        out = []
        frame, word, tok = 0, 0, 0
        for u in range(int(n)):
            T = int(d["lengths"][u])
            nw = int(d["n_words"][u])
            ids = [int(w) for w in d["word_ids"][word : word + nw]]
            ntok = int(d["wlen"][word : word + nw].sum())
            starts = d["tok_start"][tok : tok + ntok]
            ends = starts + d["reps"][tok : tok + ntok]
            token_spans = [(int(a), int(b)) for a, b in zip(starts, ends)]
            word_spans, k = [], 0
            for w in ids:
                word_spans.append((token_spans[k][0], token_spans[k + len(lex[w]) - 1][1]))
                k += len(lex[w])
            out.append(SyntheticUtterance(
                d["features"][frame : frame + T], d["alignment"][frame : frame + T], ids,
                [list(lex[w]) for w in ids], word_spans, token_spans, float(d["r_sil"][u]),
            ))
            frame, word, tok = frame + T, word + nw, tok + ntok
        return out

    def sample(self) -> SyntheticUtterance:
        """Draws one utterance."""
        return self.sample_many(1)[0]

    def batch(self, batch_size: int, device=None) -> SyntheticBatch:
        """Draws and pads ``batch_size`` utterances (the same data as ``collate(sample_many(n))``)."""
        n = int(batch_size)
        if n < 1:
            raise FsalignError(f"batch_size must be >= 1, got {batch_size}")
        d = self._draw(n)
        lengths = d["lengths"]
        T = int(lengths.max())
        utt = np.repeat(np.arange(n), lengths)
        pos = np.arange(len(utt)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        feats = np.zeros((n, T, self.config.feature_dim), np.float32)
        feats[utt, pos] = d["features"]
        ali = np.full((n, T), PAD_LABEL, np.int64)
        ali[utt, pos] = d["alignment"]
        # word spans: first token start and last token end of every word
        wlen = d["wlen"]
        first_tok = np.cumsum(wlen) - wlen
        last_tok = first_tok + wlen - 1
        w_start = d["tok_start"][first_tok]
        w_end = d["tok_start"][last_tok] + d["reps"][last_tok]
        lex = self.config.lexicon
        bounds = np.concatenate([[0], np.cumsum(d["n_words"])]).tolist()
        ids, ws, we = d["word_ids"].tolist(), w_start.tolist(), w_end.tolist()
        transcripts = [[lex[w] for w in ids[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]
        spans = [list(zip(ws[a:b], we[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
        batch = SyntheticBatch(
            torch.from_numpy(feats), torch.from_numpy(lengths.astype(np.int64)), torch.from_numpy(ali),
            transcripts, spans, [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
        )
        return batch if device is None else batch.to(device)
