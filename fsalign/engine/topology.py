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
:mod:`fsalign.engine.graphs` for the conventions every graph follows.

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

from fsalign.engine.graphs import (
    Transcript,
    fsa_vec_from_arrays,
    min_frames_of,
    validate_transcripts,
)
from fsalign.errors import FsalignError
from fsalign.results.alignment import Alignment, spans_from_path

__all__ = ["Topology", "TrainingGraphs", "loop_scores"]


def loop_scores(loop: Optional[float], what: str):
    """(log loop, log(1 - loop)) or (0, 0) when ``loop`` is None."""
    if loop is None:
        return 0.0, 0.0
    loop = float(loop)
    if not 0.0 < loop < 1.0:
        raise FsalignError(f"{what} must be a probability in (0, 1) or None, got {loop}")
    return math.log(loop), math.log1p(-loop)


class TrainingGraphs:
    """Training graphs of a batch, as produced by :meth:`fsalign.Topology.compile`.

    The k2 FsaVec is built on first use of :attr:`fsa` when the topology can build it from the
    transcripts (the built-in chains: the exact chain kernels of :mod:`fsalign.engine.chain`
    need no k2 graph at all), or given at construction.

    Args:
      fsa: k2 FsaVec with B graphs, arc-sorted, or None to build it from the transcripts.
      transcripts: the B transcripts the graphs were compiled from.
      min_frames: Tensor of shape (B,), int64 on CPU: frames each utterance needs at least
        under the topology (1 for an empty transcript: it still needs a frame).
      topology: the topology that compiled them.
      device: where the graphs are (and where a built FSA goes).
    """

    def __init__(self, fsa: Optional[k2.Fsa], transcripts: List[Transcript], min_frames: torch.Tensor,
                 topology: "Topology", device=None):
        self._fsa = fsa
        self.transcripts = transcripts
        self.min_frames = min_frames
        self.topology = topology
        self._device = torch.device(device) if device is not None else (fsa.device if fsa is not None else
                                                                        torch.device("cpu"))
        self.cache: dict = {}  # what engines derive from the graphs (e.g. chains), per setting

    @property
    def fsa(self) -> k2.Fsa:
        """k2 FsaVec with B graphs, arc-sorted; scores are transition log-probs (``transition_scale`` 1)."""
        if self._fsa is None:
            self._fsa = self.topology._compile_fsa(self.transcripts).to(self._device)
        return self._fsa

    def __len__(self) -> int:
        return len(self.transcripts)

    @property
    def device(self) -> torch.device:
        """The device of the graphs."""
        return self._device

    def to(self, device) -> "TrainingGraphs":
        """Returns the graphs on ``device`` (a no-op when already there)."""
        device = torch.device(device)
        if self._device == device:
            return self
        fsa = None if self._fsa is None else self._fsa.to(device)
        return TrainingGraphs(fsa, self.transcripts, self.min_frames, self.topology, device)

    def __getitem__(self, indices) -> "TrainingGraphs":
        """Selects utterances: an int, a slice, or a sequence/1-D tensor of indices."""
        idx = torch.arange(len(self))[indices]
        if idx.ndim == 0:
            idx = idx.unsqueeze(0)
        fsa = None if self._fsa is None else k2.index_fsa(self._fsa, idx.to(torch.int32).to(self._fsa.device))
        return TrainingGraphs(fsa, [self.transcripts[i] for i in idx.tolist()], self.min_frames[idx],
                              self.topology, self._device)


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
            got = "an FsaVec" if isinstance(fst, k2.Fsa) else type(fst).__name__
            raise FsalignError(f"from_fst expects a single k2.Fsa, got {got}")
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

    def path_alignment(self, labels: np.ndarray, out_symbols: np.ndarray, transcript: Transcript,
                       score: float) -> Alignment:
        """The :class:`~fsalign.results.alignment.Alignment` of one best path of this topology's graphs.

        Args:
          labels: array of shape (T,), the column of every frame.
          out_symbols: array of shape (T,), the output symbol of every frame's arc (0 for none).
          transcript: words -> token ids.
          score: the path's score.
        """
        tokens, words = spans_from_path(labels, out_symbols, transcript, self.non_token_labels, self.silence_symbol)
        return Alignment(torch.from_numpy(np.asarray(labels).astype(np.int64)), float(score), tokens, words)

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
        if self._min_frames_need_fsa:
            fsa = self._compile_fsa(transcripts).to(device)
            return TrainingGraphs(fsa, transcripts, self._min_frames(transcripts, fsa), self, device)
        return TrainingGraphs(None, transcripts, self._min_frames(transcripts, None), self, device)

    _min_frames_need_fsa = True  # the built-in chains count their frames without building the graph

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
