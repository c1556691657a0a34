"""Label topologies as k2 FSTs, and their compilation into training graphs.

Dimension symbols used in this module:
  B: utterances in a batch
  C: score-matrix columns (alignment labels, blank/silence included)
  S: tokens in one transcript

A topology is a k2 FST from alignment labels (score-matrix columns; k2
``labels``) to tokens (k2 ``aux_labels``: ``token + token_offset``, 0 = no
output) whose arc scores are transition log-probs. Compiling a batch of
transcripts composes it with one acceptor per utterance (with an optional
silence symbol at word boundaries when the topology has one); see
:mod:`fsalign.graphs` for the conventions every graph follows.

The built-in topologies (:class:`CtcTopology`, :class:`RelaxedTopology`,
:class:`HmmTopology`) build the same graphs directly from the transcripts,
vectorised per utterance, because their FST has O(C^2) arcs (25 M for a
5000-unit vocabulary); ``topo.fst`` still gives that FST, and the tests check
that composing it gives graphs equivalent to the direct ones.

Transition model (what ``transition_scale`` γ multiplies): a state with loop
probability q scores ``log q`` when it repeats and ``log(1 - q)`` for any other
move out of it; moves out of the start state (the first frame) and into the
final state score 0; ``None`` for q means no transition scores for that kind.
"""
import math
from typing import List, Optional, Sequence

import k2
import numpy as np
import torch

from fsalign.errors import FsalignError
from fsalign.graphs import (
    Transcript,
    TrainingGraphs,
    fsa_vec_from_arrays,
    min_frames_of,
    validate_transcripts,
)

__all__ = ["Topology", "CtcTopology", "RelaxedTopology", "HmmTopology"]


def _loop_scores(loop: Optional[float], what: str):
    """(log loop, log(1 - loop)) or (0, 0) when ``loop`` is None."""
    if loop is None:
        return 0.0, 0.0
    loop = float(loop)
    if not 0.0 < loop < 1.0:
        raise FsalignError(f"{what} must be a probability in (0, 1) or None, got {loop}")
    return math.log(loop), math.log1p(-loop)


class Topology:
    """A label topology: a k2 FST plus what compiling and reading alignments needs.

    Use :meth:`from_fst` for a user-built FST, or one of the built-in subclasses.

    Attributes:
      num_labels: C, the number of score-matrix columns.
      non_token_labels: columns that belong to no token (blank, silence); frames
        aligned to them are outside every token span.
      silence_symbol: output symbol the transcript acceptor inserts, optionally,
        at every word boundary (before the first word, between words, after the
        last word), or None.
      token_offset: output symbol of token k is ``k + token_offset``.
      name: short description used in messages.
    """

    def __init__(
        self,
        fst: Optional[k2.Fsa],
        num_labels: int,
        non_token_labels: Sequence[int],
        silence_symbol: Optional[int] = None,
        token_offset: int = 0,
        name: str = "custom",
    ):
        if int(num_labels) < 1:
            raise FsalignError(f"num_labels must be >= 1, got {num_labels}")
        self.num_labels = int(num_labels)
        self.non_token_labels = tuple(sorted(int(x) for x in non_token_labels))
        for col in self.non_token_labels:
            if not 0 <= col < self.num_labels:
                raise FsalignError(f"non-token column {col} outside 0..{self.num_labels - 1}")
        self.silence_symbol = None if silence_symbol is None else int(silence_symbol)
        self.token_offset = int(token_offset)
        self.name = name
        self._fst = fst
        self._valid_tokens: Optional[List[bool]] = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fst(
        cls,
        fst: k2.Fsa,
        num_labels: Optional[int] = None,
        *,
        non_token_labels: Sequence[int] = (0,),
        silence_symbol: Optional[int] = None,
        token_offset: int = 0,
        name: str = "custom",
    ) -> "Topology":
        """Wraps a user-built topology FST.

        The FST follows k2's conventions and these:
          * ``labels``: score-matrix columns, -1 on arcs into the final state;
          * ``aux_labels``: ``token + token_offset`` on the arc that enters the
            first frame of a token, ``silence_symbol`` on the arc that enters a
            word-boundary silence, 0 on every other arc (loops, blank);
          * ``scores``: transition log-probs; the start state (0) has no
            incoming arcs and its arcs consume the first frame;
          * loops are self-loops (other cycles are allowed but then the
            minimum-frames check cannot be computed and is skipped).

        Args:
          fst: a single k2 Fsa with ``aux_labels`` (a tensor, not ragged).
          num_labels: C; defaults to the largest label + 1.
          non_token_labels: columns that belong to no token (blank/silence).
          silence_symbol: output symbol placed optionally at word boundaries of
            each transcript (an HMM-style topology), or None (CTC-style: the FST
            itself places blank anywhere).
          token_offset: output symbol of token k is ``k + token_offset``; k2's
            usual convention (0 = no output, tokens from 1) is offset 0.
          name: description used in messages.
        """
        if not isinstance(fst, k2.Fsa) or len(fst.shape) != 2:
            raise FsalignError("from_fst expects a single k2.Fsa (not an FsaVec)")
        if not isinstance(getattr(fst, "aux_labels", None), torch.Tensor):
            raise FsalignError("the topology FST needs tensor aux_labels (the output tokens)")
        fst = fst.to("cpu")
        max_label = int(fst.labels.max())
        if num_labels is None:
            num_labels = max_label + 1
        if max_label >= num_labels:
            raise FsalignError(f"the FST uses label {max_label}, but num_labels is {num_labels}")
        return cls(k2.arc_sort(fst), num_labels, non_token_labels, silence_symbol, token_offset, name)

    # ------------------------------------------------------------------ properties
    @property
    def fst(self) -> k2.Fsa:
        """The topology FST (CPU, arc-sorted)."""
        if self._fst is None:
            self._fst = k2.arc_sort(self._build_fst())
        return self._fst

    def _build_fst(self) -> k2.Fsa:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def valid_tokens(self) -> List[bool]:
        """``valid_tokens[k]`` is True when k may appear in a transcript."""
        if self._valid_tokens is None:
            aux = self.fst.aux_labels
            syms = aux[aux > 0]
            if self.silence_symbol is not None:
                syms = syms[syms != self.silence_symbol]
            toks = (syms - self.token_offset).unique().tolist()
            size = max([self.num_labels] + [t + 1 for t in toks])
            table = [False] * size
            for t in toks:
                if t >= 0:
                    table[t] = True
            self._valid_tokens = table
        return self._valid_tokens

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, num_labels={self.num_labels})"

    # ------------------------------------------------------------------ compilation
    def compile(self, transcripts, device="cpu") -> TrainingGraphs:
        """Compiles transcripts into training graphs.

        Args:
          transcripts: ``list[list[list[int]]]``, utterance -> words -> token ids.
          device: device of the returned graphs (put them where the scores are).

        Returns:
          TrainingGraphs with B graphs.

        Raises:
          FsalignError: a malformed transcript or a token id the topology does
            not have (named by utterance and word).
        """
        transcripts = validate_transcripts(transcripts, self.valid_tokens, self.name)
        fsa = self._compile_fsa(transcripts)
        min_frames = self._min_frames(transcripts, fsa)
        return TrainingGraphs(fsa.to(device), transcripts, min_frames, self)

    def _compile_fsa(self, transcripts: List[Transcript]) -> k2.Fsa:
        acceptors = k2.arc_sort(k2.add_epsilon_self_loops(self._transcript_acceptors(transcripts)))
        graphs = k2.compose(self.fst, acceptors, treat_epsilons_specially=False)
        return k2.arc_sort(k2.connect(graphs))

    def _min_frames(self, transcripts: List[Transcript], fsa: k2.Fsa) -> torch.Tensor:
        try:
            return min_frames_of(fsa)
        except RuntimeError:  # cycles other than self-loops: cannot tell, never refuse
            return torch.zeros(len(transcripts), dtype=torch.int64)

    def _transcript_acceptors(self, transcripts: List[Transcript]) -> k2.Fsa:
        """One acceptor per utterance over output symbols (optional silence at word boundaries)."""
        per_utt = []
        off, sil = self.token_offset, self.silence_symbol
        for words in transcripts:
            src, dst, lab = [], [], []
            state = 0
            for w, word in enumerate(words):
                # boundary before word w: optional silence into a twin state
                if sil is not None:
                    twin = state + 1
                    src += [state, state, twin]
                    dst += [twin, twin + 1, twin + 1]
                    lab += [sil, word[0] + off, word[0] + off]
                    state = twin + 1
                else:
                    src.append(state)
                    dst.append(state + 1)
                    lab.append(word[0] + off)
                    state += 1
                for tok in word[1:]:
                    src.append(state)
                    dst.append(state + 1)
                    lab.append(tok + off)
                    state += 1
            finals = [state]
            if sil is not None:
                src.append(state)
                dst.append(state + 1)
                lab.append(sil)
                finals.append(state + 1)
                state += 1
            final = state + 1
            for f in finals:
                src.append(f)
                dst.append(final)
                lab.append(-1)
            src, dst, lab = (np.asarray(x, dtype=np.int64) for x in (src, dst, lab))
            order = np.argsort(src, kind="stable")
            src, dst, lab = src[order], dst[order], lab[order]
            per_utt.append((src, dst, lab, np.zeros(len(src), np.float32), None))
        return fsa_vec_from_arrays(per_utt, "cpu")


class _BuiltinTopology(Topology):
    """A built-in topology: graphs built directly from the transcripts (no composition)."""

    def _compile_fsa(self, transcripts: List[Transcript]) -> k2.Fsa:
        return k2.arc_sort(fsa_vec_from_arrays([self._graph_arrays(t) for t in transcripts], "cpu"))

    def _graph_arrays(self, words: Transcript):  # pragma: no cover - overridden
        raise NotImplementedError

    @staticmethod
    def _assemble(labels, aux, loop_lp, fwd_lp, initial, moves, finals):
        """Arcs of one graph from its expanded state sequence.

        Expanded state j (k2 state j + 1) emits ``labels[j]``; ``aux[j]`` is the
        output symbol of arcs entering it (other than its loop); ``moves`` is a
        (M, 2) array of (from, to) expanded states; ``initial``/``finals`` list
        expanded states. Start state 0, final state ``len(labels) + 1``.
        """
        n = len(labels)
        js = np.arange(n)
        initial = np.asarray(initial, dtype=np.int64)
        finals = np.asarray(finals, dtype=np.int64)
        mf, mt = moves[:, 0], moves[:, 1]
        src = np.concatenate([np.zeros(len(initial), np.int64), js + 1, mf + 1, finals + 1])
        dst = np.concatenate([initial + 1, js + 1, mt + 1, np.full(len(finals), n + 1)])
        lab = np.concatenate([labels[initial], labels, labels[mt], np.full(len(finals), -1)])
        score = np.concatenate(
            [np.zeros(len(initial)), loop_lp, fwd_lp[mf], np.zeros(len(finals))]
        ).astype(np.float32)
        out = np.concatenate([aux[initial], np.zeros(n, np.int64), aux[mt], np.full(len(finals), -1)])
        order = np.argsort(src, kind="stable")
        return src[order], dst[order], lab[order], score[order], out[order]

    def _fst_arrays(self, blank_state_label, blank_symbol, blank_lp, token_lp, token_to_same: bool):
        """Arcs of the topology FST: start, one blank/silence state, one state per token."""
        toks = np.asarray([k for k, ok in enumerate(self.valid_tokens) if ok], dtype=np.int64)
        K = len(toks)
        off = self.token_offset
        labels = np.concatenate([[blank_state_label], toks])
        aux = np.concatenate([[blank_symbol], toks + off])
        loop_lp = np.concatenate([[blank_lp[0]], np.full(K, token_lp[0])])
        fwd_lp = np.concatenate([[blank_lp[1]], np.full(K, token_lp[1])])
        # moves: blank -> every token, token -> blank, token -> token (same one if allowed)
        tok_states = np.arange(1, K + 1)
        fr, to = np.meshgrid(tok_states, tok_states, indexing="ij")
        keep = np.ones_like(fr, dtype=bool) if token_to_same else fr != to
        moves = np.concatenate(
            [
                np.stack([np.zeros(K, np.int64), tok_states], 1),
                np.stack([tok_states, np.zeros(K, np.int64)], 1),
                np.stack([fr[keep], to[keep]], 1),
            ]
        )
        src, dst, lab, score, out = self._assemble(
            labels, aux, loop_lp, fwd_lp, np.arange(K + 1), moves, np.arange(K + 1)
        )
        arcs = torch.from_numpy(np.stack([src, dst, lab, score.view(np.int32)], 1).astype(np.int32))
        fst = k2.Fsa(arcs)
        fst.aux_labels = torch.from_numpy(out.astype(np.int32))
        return fst


class CtcTopology(_BuiltinTopology):
    """CTC: blank optional before, between and after tokens, mandatory between equal neighbours.

    Args:
      num_labels: C, score-matrix columns including blank.
      blank: the blank column.
      label_loop: loop probability of token states (None: no transition scores).
      blank_loop: loop probability of blank states (None: no transition scores).
    """

    relaxed = False

    def __init__(self, num_labels: int, blank: int = 0, label_loop: Optional[float] = None,
                 blank_loop: Optional[float] = None):
        name = "relaxed" if self.relaxed else "CTC"
        super().__init__(None, num_labels, (blank,), None, token_offset=1, name=f"{name} topology")
        self.blank = int(blank)
        self.label_loop, self.blank_loop = label_loop, blank_loop
        self._token_lp = _loop_scores(label_loop, "label_loop")
        self._blank_lp = _loop_scores(blank_loop, "blank_loop")
        self._valid_tokens = [k != self.blank for k in range(self.num_labels)]

    def _build_fst(self) -> k2.Fsa:
        return self._fst_arrays(self.blank, 0, self._blank_lp, self._token_lp, self.relaxed)

    def _graph_arrays(self, words: Transcript):
        a = np.asarray([t for w in words for t in w], dtype=np.int64)
        S = len(a)
        n = 2 * S + 1
        labels = np.full(n, self.blank, np.int64)
        labels[1::2] = a
        aux = np.zeros(n, np.int64)
        aux[1::2] = a + self.token_offset
        is_tok = np.zeros(n, bool)
        is_tok[1::2] = True
        loop_lp = np.where(is_tok, self._token_lp[0], self._blank_lp[0])
        fwd_lp = np.where(is_tok, self._token_lp[1], self._blank_lp[1])
        blanks, toks = np.arange(0, n, 2), np.arange(1, n, 2)
        moves = [np.stack([blanks[:-1], toks], 1), np.stack([toks, blanks[1:]], 1)]
        skip = np.ones(max(S - 1, 0), bool) if self.relaxed else a[1:] != a[:-1]
        moves.append(np.stack([toks[:-1][skip], toks[1:][skip]], 1))
        initial = [0, 1] if S else [0]
        finals = [n - 1, n - 2] if S else [0]
        return self._assemble(labels, aux, loop_lp, fwd_lp, initial, np.concatenate(moves), finals)

    def _min_frames(self, transcripts, fsa) -> torch.Tensor:
        out = []
        for words in transcripts:
            a = [t for w in words for t in w]
            repeats = 0 if self.relaxed else sum(x == y for x, y in zip(a, a[1:]))
            out.append(max(1, len(a) + repeats))
        return torch.tensor(out, dtype=torch.int64)


class RelaxedTopology(CtcTopology):
    """Section 5's relaxed CTC: blank optional anywhere, also between equal neighbours.

    With a blank between every pair, repeats need no blank: the states are
    (ε, a_1, ε, a_2, ..., a_S, ε) and a_s -> a_{s+1} is always allowed.
    Arguments as for :class:`CtcTopology`.
    """

    relaxed = True


class HmmTopology(_BuiltinTopology):
    """HMM: silence optional before the first word, between words and after the last.

    Never inside a word. Every token state has a self-loop; consecutive tokens
    (equal or not) are separate states.

    Args:
      num_labels: C, score-matrix columns including silence.
      silence: the silence column.
      label_loop: loop probability of token states (None: no transition scores).
      silence_loop: loop probability of the silence state (None: no transition scores).
    """

    def __init__(self, num_labels: int, silence: int = 0, label_loop: Optional[float] = 0.5,
                 silence_loop: Optional[float] = 0.96):
        super().__init__(None, num_labels, (silence,), silence + 1, token_offset=1, name="HMM topology")
        self.silence = int(silence)
        self.label_loop, self.silence_loop = label_loop, silence_loop
        self._token_lp = _loop_scores(label_loop, "label_loop")
        self._sil_lp = _loop_scores(silence_loop, "silence_loop")
        self._valid_tokens = [k != self.silence for k in range(self.num_labels)]

    def _build_fst(self) -> k2.Fsa:
        return self._fst_arrays(self.silence, self.silence_symbol, self._sil_lp, self._token_lp, True)

    def _graph_arrays(self, words: Transcript):
        N = len(words)
        sizes = np.asarray([len(w) for w in words], dtype=np.int64)
        a = np.asarray([t for w in words for t in w], dtype=np.int64)
        S = len(a)
        n = S + N + 1
        word_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if N else np.zeros(0, np.int64)
        sil_idx = np.arange(N + 1) + np.concatenate([[0], np.cumsum(sizes)])  # sil_b
        tok_word = np.repeat(np.arange(N), sizes)
        tok_idx = np.arange(S) + tok_word + 1
        labels = np.full(n, self.silence, np.int64)
        labels[tok_idx] = a
        aux = np.full(n, self.silence_symbol, np.int64)
        aux[tok_idx] = a + self.token_offset
        is_tok = np.zeros(n, bool)
        is_tok[tok_idx] = True
        loop_lp = np.where(is_tok, self._token_lp[0], self._sil_lp[0])
        fwd_lp = np.where(is_tok, self._token_lp[1], self._sil_lp[1])
        first = tok_idx[word_start] if N else np.zeros(0, np.int64)
        last = tok_idx[word_start + sizes - 1] if N else np.zeros(0, np.int64)
        within = tok_word[1:] == tok_word[:-1]
        moves = np.concatenate(
            [
                np.stack([tok_idx[:-1][within], tok_idx[1:][within]], 1),
                np.stack([sil_idx[:-1], first], 1),
                np.stack([last, sil_idx[1:]], 1),
                np.stack([last[:-1], first[1:]], 1),
            ]
        )
        initial = [0, int(first[0])] if N else [0]
        finals = [n - 1, int(last[-1])] if N else [0]
        return self._assemble(labels, aux, loop_lp, fwd_lp, initial, moves, finals)

    def _min_frames(self, transcripts, fsa) -> torch.Tensor:
        return torch.tensor([max(1, sum(len(w) for w in words)) for words in transcripts],
                            dtype=torch.int64)
