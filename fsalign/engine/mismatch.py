"""Training graphs for transcripts that do not match the audio exactly: garbage and skipped words.

Dimension symbols used in this module:
  C: score-matrix columns of the base topology (the garbage column is C)
  T: frames of one utterance

:class:`MismatchTopology` wraps any topology (the built-in CTC, relaxed and HMM chains, or one
of :meth:`Topology.from_fst`) and adds two things to every training graph:

* **garbage**: at every word boundary (before the first word, between words, after the last)
  a path may pass through a garbage state that emits score-matrix column ``C`` (the scorer
  appends it, :mod:`fsalign.scores.mismatch`) for one frame or more: untranscribed speech,
  noise. Garbage ends the topology's sequence as the end of the utterance would and restarts it
  as the start of the utterance does, so at a word boundary a path may take, in this order, the
  topology's own boundary material (blank, or an HMM's optional silence), garbage, and the
  topology's boundary material again. Every garbage frame costs ``garbage_penalty``, and its first
  frame ``garbage_entry_penalty`` more;
* **skips**: a transcript word may be left out at ``skip_penalty`` per word (at most
  ``max_skip`` consecutive words), the bypass of the whole word: the path goes from the end of
  the previous word straight to the next word's boundary. A skipped word gets no frames.

The penalties are added to the path score as they are: they are not multiplied by the
transition scale γ (they live in the arcs' ``penalty`` attribute, which
:func:`fsalign.engine.graphs.scale_transitions` leaves unscaled) nor by α. The graphs are
built by composing the base topology's FST, extended by one garbage state, with one
transducer per utterance from topology output symbols to *codes* that name what the path
does: ``SILENCE_CODE``, ``GARBAGE_CODE`` or ``POSITION_BASE + p`` on the arc entering
transcript position p. Unlike other graphs, their ``aux_labels`` are these codes (so that the
best path says which words it skipped, even where neighbouring words share tokens); they are
read by :meth:`MismatchTopology.path_alignment`.

The graphs are no chains: they run on the k2 engine (``engine="auto"`` picks it).
"""
import math
from dataclasses import dataclass
from typing import List

import k2
import numpy as np
import torch

from fsalign.engine.graphs import Transcript, fsa_vec_from_arrays
from fsalign.engine.topology import Topology
from fsalign.errors import FsalignError
from fsalign.results.alignment import Alignment, TokenSpan, UntranscribedSpan, WordSpan

__all__ = ["GARBAGE_SCORES", "MismatchOptions", "MismatchTopology", "SILENCE_CODE", "GARBAGE_CODE",
           "POSITION_BASE"]

GARBAGE_SCORES = ("max", "sum", "zero")
"""How a scorer fills the garbage column from the log posteriors of a frame (:mod:`fsalign.scores.mismatch`)."""

SILENCE_CODE = 1
GARBAGE_CODE = 2
POSITION_BASE = 3


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class MismatchOptions:
    """How much the path score pays for garbage frames and skipped words.

    Attributes:
      garbage_penalty: subtracted from the path score for every garbage frame (>= 0).
      skip_penalty: subtracted from the path score for every skipped transcript word (>= 0).
      max_skip: the most consecutive transcript words one bypass may leave out (>= 1); the
        graphs grow by about ``max_skip`` arcs per word.
      garbage_score: what the garbage column holds per frame (the scorer computes it from the
        frame's log posteriors; :data:`GARBAGE_SCORES`): ``"max"``, the best token column;
        ``"sum"``, the log of the total probability of the token columns (all but blank /
        silence); ``"zero"``, 0 (torchaudio's ``<star>`` token).
      garbage_entry_penalty: subtracted once more for the first frame of every garbage stretch (>= 0).

    The defaults were chosen on the 384 utterances of the shipped corpus with its trained phone HMM
    (benchmarks/mismatch.py, docs/mismatch.md): with 5 % of the spoken words left out of the
    transcripts and as many foreign words put in, every word both spoken and transcribed stays aligned
    and their TSE rises by 1.4 ms; on clean transcripts nothing is skipped and the TSE rises by 0.1 ms.

    Raises:
      FsalignError: a value outside its range (named, with the value).
    """

    garbage_penalty: float = 2.0
    skip_penalty: float = 6.0
    max_skip: int = 8
    garbage_score: str = "max"
    garbage_entry_penalty: float = 0.0

    def __post_init__(self):
        for name in ("garbage_penalty", "skip_penalty", "garbage_entry_penalty"):
            value = getattr(self, name)
            if not (_finite(value) and value >= 0):
                raise FsalignError(f"{name.replace('_', ' ')} must be a finite number >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.max_skip, bool) or not isinstance(self.max_skip, int) or self.max_skip < 1:
            raise FsalignError(f"max skip must be an integer >= 1, got {self.max_skip!r}")
        if self.garbage_score not in GARBAGE_SCORES:
            raise FsalignError(f"garbage score must be one of {GARBAGE_SCORES}, got {self.garbage_score!r}")

    def settings(self) -> dict:
        """The options as a dict (recorded with alignments)."""
        return {"garbage_penalty": self.garbage_penalty, "skip_penalty": self.skip_penalty,
                "max_skip": self.max_skip, "garbage_score": self.garbage_score,
                "garbage_entry_penalty": self.garbage_entry_penalty}


class MismatchTopology(Topology):
    """A topology whose graphs allow garbage at word boundaries and skipped words (module docstring).

    Args:
      base: the topology to extend (any :class:`~fsalign.engine.topology.Topology`).
      options: the penalties and the longest bypass.

    Attributes:
      base: the wrapped topology.
      options: the :class:`MismatchOptions`.
      garbage: the garbage column (``base.num_labels``); ``num_labels`` is one more than the base's.
    """

    def __init__(self, base: Topology, options: MismatchOptions = MismatchOptions()):
        if not isinstance(base, Topology) or isinstance(base, MismatchTopology):
            raise FsalignError(f"MismatchTopology extends a topology without mismatch, got {base!r}")
        if not isinstance(options, MismatchOptions):
            raise FsalignError(f"options must be MismatchOptions, got {type(options).__name__}")
        self.base, self.options = base, options
        self.garbage = base.num_labels
        super().__init__(None, base.num_labels + 1, base.non_token_labels + (self.garbage,), base.silence_symbol,
                         base.token_offset, name=f"{base.name} with mismatch")
        self._valid_tokens = list(base.valid_tokens)

    def __repr__(self) -> str:
        return f"MismatchTopology({self.base!r}, {self.options})"

    # ------------------------------------------------------------------ the extended topology FST
    def _build_fst(self) -> k2.Fsa:
        """The base FST plus a garbage state (entered from the start and from every state that may end)."""
        fst = self.base.fst
        values = fst.arcs.values()
        src, dst, lab = (values[:, k].long().numpy() for k in range(3))
        score, aux = fst.scores.detach().numpy().astype(np.float64), fst.aux_labels.long().numpy()
        final = int(fst.shape[0]) - 1
        g, new_final = final, final + 1
        dst = np.where(dst == final, new_final, dst)
        penalty = np.zeros(len(src))
        symbol = self.garbage_symbol
        enders = np.unique(src[(lab == -1) & (src != 0)])
        starts = np.nonzero((src == 0) & (lab != -1))[0]
        P = -self.options.garbage_penalty
        E = P - self.options.garbage_entry_penalty
        new = [(s, g, self.garbage, symbol, E) for s in [0] + enders.tolist()]  # into garbage: its first frame
        new.append((g, g, self.garbage, 0, P))
        new += [(g, int(dst[i]), int(lab[i]), int(aux[i]), float(score[i])) for i in starts]  # restart
        new.append((g, new_final, -1, -1, 0.0))
        add = np.asarray(new, dtype=np.float64).reshape(-1, 5)
        add_penalty = np.where(add[:, 2] == self.garbage, add[:, 4], 0.0)
        src, dst, lab, aux = (np.concatenate([x, add[:, k].astype(np.int64)])
                              for x, k in ((src, 0), (dst, 1), (lab, 2), (aux, 3)))
        score, penalty = np.concatenate([score, add[:, 4]]), np.concatenate([penalty, add_penalty])
        order = np.argsort(src, kind="stable")
        arcs = torch.from_numpy(np.stack([src[order], dst[order], lab[order],
                                          score[order].astype(np.float32).view(np.int32)], 1).astype(np.int32))
        out = k2.Fsa(arcs)
        out.aux_labels = torch.from_numpy(aux[order].astype(np.int32))
        out.penalty = torch.from_numpy(penalty[order].astype(np.float32))
        return out

    @property
    def garbage_symbol(self) -> int:
        """The output symbol of the arc that enters garbage in the extended FST."""
        aux = self.base.fst.aux_labels
        return int(max(int(aux.max()) if len(aux) else 0, self.silence_symbol or 0, 0)) + 1

    # ------------------------------------------------------------------ compilation
    def _compile_fsa(self, transcripts: List[Transcript]) -> k2.Fsa:
        per_utt = [self._transducer_arrays(words) for words in transcripts]
        vec = fsa_vec_from_arrays([(s, d, lab, sc, aux) for s, d, lab, sc, aux, _ in per_utt], "cpu")
        vec.penalty = torch.from_numpy(np.concatenate([p for *_, p in per_utt]).astype(np.float32))
        transducers = k2.arc_sort(k2.add_epsilon_self_loops(vec))
        graphs = k2.compose(self.fst, transducers, treat_epsilons_specially=False)
        return k2.arc_sort(k2.top_sort(k2.connect(graphs)))

    def _transducer_arrays(self, words: Transcript):
        """Arcs of one utterance's transducer: topology output symbols -> codes (module docstring)."""
        off, sil, gsym = self.token_offset, self.silence_symbol, self.garbage_symbol
        N, K, P = len(words), self.options.max_skip, -self.options.skip_penalty
        arcs = []  # (src, dst, label, code, score)
        boundary = []  # per boundary b: [A, after silence, after garbage, after garbage + silence] (or [A, garbage])
        inner = []  # per word: states after each of its tokens but the last
        state = 0
        for b in range(N + 1):
            size = 4 if sil is not None else 2
            boundary.append(list(range(state, state + size)))
            state += size
            if b < N:
                inner.append(list(range(state, state + len(words[b]) - 1)))
                state += len(words[b]) - 1
        final = state
        out_of_a: List[list] = []  # the arcs out of boundary b's entry state A_b, before skips
        for b, states in enumerate(boundary):
            if sil is not None:
                a, after_sil, after_gar, after_gar_sil = states
                mine = [(a, after_sil, sil, SILENCE_CODE, 0.0), (a, after_gar, gsym, GARBAGE_CODE, 0.0)]
                arcs += [(after_sil, after_gar, gsym, GARBAGE_CODE, 0.0),
                         (after_gar, after_gar_sil, sil, SILENCE_CODE, 0.0)]
            else:
                a, after_gar = states
                mine = [(a, after_gar, gsym, GARBAGE_CODE, 0.0)]
            if b < N:
                first = words[b][0] + off
                nxt = inner[b][0] if len(words[b]) > 1 else boundary[b + 1][0]
                pos = sum(len(w) for w in words[:b])
                mine.append((a, nxt, first, POSITION_BASE + pos, 0.0))
                arcs += [(s, nxt, first, POSITION_BASE + pos, 0.0) for s in states[1:]]
                chain = inner[b] + [boundary[b + 1][0]]
                arcs += [(chain[i], chain[i + 1], tok + off, POSITION_BASE + pos + i + 1, 0.0)
                         for i, tok in enumerate(words[b][1:])]
            else:
                mine.append((a, final, -1, -1, 0.0))
                arcs += [(s, final, -1, -1, 0.0) for s in states[1:]]
            out_of_a.append(mine)
            arcs += mine
        # skipping words b .. b+k-1: A_b takes the arcs of A_{b+k} (epsilon removal of the bypass)
        for b in range(N):
            for k in range(1, min(K, N - b) + 1):
                arcs += [(boundary[b][0], d, lab, code, k * P) for _, d, lab, code, _ in out_of_a[b + k]]
        a = np.asarray(arcs, dtype=np.float64).reshape(-1, 5)
        order = np.argsort(a[:, 0], kind="stable")
        a = a[order]
        src, dst, lab, code = (a[:, k].astype(np.int64) for k in range(4))
        score = a[:, 4]
        penalty = score  # every transducer score is a penalty
        return src, dst, lab, score, code, penalty

    # ------------------------------------------------------------------ reading a best path
    def path_alignment(self, labels: np.ndarray, out_symbols: np.ndarray, transcript: Transcript,
                       score: float) -> Alignment:
        """The alignment of one best path: spans of the aligned words, the skipped words, garbage spans.

        Args:
          labels: array of shape (T,), the column of every frame.
          out_symbols: array of shape (T,), the code of every frame's arc (module docstring; 0 for none).
          transcript: words -> token ids.
          score: the path's score.

        Returns:
          An :class:`~fsalign.results.alignment.Alignment` whose ``tokens`` and ``words`` hold the
          aligned words only, ``skipped`` the indices of the others and ``untranscribed`` the
          garbage spans.
        """
        labels, codes = np.asarray(labels, dtype=np.int64), np.asarray(out_symbols, dtype=np.int64)
        T = len(labels)
        tokens = [t for w in transcript for t in w]
        word_of = [i for i, w in enumerate(transcript) for _ in w]
        starts = codes >= POSITION_BASE
        visited = codes[starts] - POSITION_BASE
        last_start = np.maximum.accumulate(np.where(starts, np.arange(T), -1)) if T else np.zeros(0, np.int64)
        position = np.where(last_start >= 0, codes[last_start.clip(min=0)] - POSITION_BASE, -1)
        in_token = ~np.isin(labels, np.asarray(self.non_token_labels)) & (position >= 0)
        frames = np.nonzero(in_token)[0]
        pos = position[frames]
        kept = set(visited.tolist())
        if (len(visited) > 1 and np.any(np.diff(visited) <= 0)) or np.any(visited >= len(tokens)) or \
                set(np.unique(pos).tolist()) != kept:
            raise RuntimeError("the best path does not visit transcript positions once each in order: the "
                               "topology FST does not follow fsalign's conventions (see Topology.from_fst)")
        order = sorted(kept)
        bounds = np.searchsorted(pos, np.asarray(order + [len(tokens)]))
        token_spans = [TokenSpan(p, word_of[p], tokens[p], int(frames[bounds[i]]), int(frames[bounds[i + 1] - 1]) + 1)
                       for i, p in enumerate(order)]
        by_position = {t.position: t for t in token_spans}
        word_spans, skipped, first = [], [], 0
        for w, word in enumerate(transcript):
            last = first + len(word) - 1
            if first in by_position:
                if last not in by_position:
                    raise RuntimeError(f"the best path aligns only part of word {w}")
                word_spans.append(WordSpan(w, by_position[first].start, by_position[last].end, first, last))
            else:
                skipped.append(w)
            first = last + 1
        is_garbage = np.concatenate([[False], labels == self.garbage, [False]])
        edges = np.nonzero(np.diff(is_garbage.astype(np.int8)))[0]
        garbage = [UntranscribedSpan(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2])]
        return Alignment(torch.from_numpy(labels), float(score), token_spans, word_spans, skipped, garbage)

