"""The built-in chain topologies: CTC, relaxed CTC (section 5) and HMM.

Dimension symbols used in this module:
  C: score-matrix columns (alignment labels, blank/silence included)
  S: tokens in one transcript
  W: words in one transcript

Each builds its training graphs directly from the transcripts, vectorised per
utterance, instead of composing its FST with transcript acceptors: the FST has
O(C^2) arcs (25 M for a 5000-unit vocabulary). ``topo.fst`` still gives that FST,
and the tests check that composing it gives graphs equivalent to the direct ones.
Every graph is a chain: expanded states emit one column each, and a state moves to
itself (loop), to the next state, or skips one state (CTC between different
tokens, HMM over an optional word-boundary silence).
"""
from typing import List, Optional

import k2
import numpy as np
import torch

from fsalign.engine.graphs import Transcript, fsa_vec_from_arrays
from fsalign.engine.topology import Topology, loop_scores

__all__ = ["CtcTopology", "RelaxedTopology", "HmmTopology", "TOPOLOGIES", "make_topology"]

TOPOLOGIES = ("ctc", "hmm", "relaxed")


class _BuiltinTopology(Topology):
    """A built-in topology: graphs built directly from the transcripts (no composition).

    Column ``blank`` is blank (CTC) or silence (HMM); every other column is a token.
    ``label_loop`` is the loop probability of token states, ``blank_loop`` that of the
    blank/silence state (named ``blank_name`` in messages); None: no transition scores.
    """

    _min_frames_need_fsa = False

    def __init__(self, num_labels: int, blank: int, silence_symbol: Optional[int], name: str,
                 label_loop: Optional[float], blank_loop: Optional[float], blank_name: str):
        super().__init__(None, num_labels, (blank,), silence_symbol, token_offset=1, name=name)
        self._token_lp = loop_scores(label_loop, "label_loop")
        self._blank_lp = loop_scores(blank_loop, blank_name)
        self._valid_tokens = [k != int(blank) for k in range(self.num_labels)]

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
        name = "relaxed topology" if self.relaxed else "CTC topology"
        super().__init__(num_labels, blank, None, name, label_loop, blank_loop, "blank_loop")
        self.blank = int(blank)
        self.label_loop, self.blank_loop = label_loop, blank_loop

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
        super().__init__(num_labels, silence, silence + 1, "HMM topology", label_loop, silence_loop, "silence_loop")
        self.silence = int(silence)
        self.label_loop, self.silence_loop = label_loop, silence_loop

    def _build_fst(self) -> k2.Fsa:
        return self._fst_arrays(self.silence, self.silence_symbol, self._blank_lp, self._token_lp, True)

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
        loop_lp = np.where(is_tok, self._token_lp[0], self._blank_lp[0])
        fwd_lp = np.where(is_tok, self._token_lp[1], self._blank_lp[1])
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


def make_topology(kind: str, num_labels: int, **params) -> Topology:
    """Built-in topology by name: ``ctc`` (blank 0), ``relaxed`` (blank 0) or ``hmm`` (silence 0).

    Args:
      kind: one of :data:`TOPOLOGIES`.
      num_labels: C.
      **params: loop probabilities (``label_loop``, ``blank_loop`` / ``silence_loop``).

    Raises:
      ValueError: an unknown ``kind``.
    """
    classes = {"ctc": CtcTopology, "relaxed": RelaxedTopology, "hmm": HmmTopology}
    if kind not in classes:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got {kind!r}")
    return classes[kind](num_labels, **params)
