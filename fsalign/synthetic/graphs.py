"""Label topologies and training graphs for the synthetic data.

The HMM transition model (γ in eq. 6) needs loop probabilities; by default
they are the maximum-likelihood estimates on ground-truth alignments of the
data distribution (:func:`estimate_loop_probabilities`): about ``1 - 1/N_rep``
for the tokens (0.5 for ``N_rep = 2``, 0.9 for ``N_rep = 10``) and
``1 - 1/(mean silence run)`` for silence. :class:`GraphBank` compiles the
graphs of all transcripts a distribution can produce once.

Dimension symbols legend:
  B: batch size
"""
import itertools
from typing import Optional, Sequence, Tuple

import torch

from fsalign.engine.builtin import CtcTopology, HmmTopology
from fsalign.engine.topology import Topology, TrainingGraphs
from fsalign.errors import FsalignError
from fsalign.synthetic.data import EPSILON, SyntheticConfig, SyntheticGenerator

__all__ = ["estimate_loop_probabilities", "build_topology", "GraphBank", "TOPOLOGIES"]

TOPOLOGIES = ("hmm", "ctc")


def estimate_loop_probabilities(
    config: SyntheticConfig, num_samples: int = 2000, seed: int = 0
) -> Tuple[float, Optional[float]]:
    """Maximum-likelihood loop probabilities of the HMM transition model.

    Counted on ``num_samples`` ground-truth alignments, with the transition
    model of :class:`fsalign.engine.topology.HmmTopology`: a token state loops
    ``reps - 1`` times and leaves once unless it ends the utterance (moves into
    the final state are not scored); likewise every non-empty silence gap. A
    token repeated a fixed ``N_rep`` times gives about ``1 - 1/N_rep``.

    Returns:
      (label_loop, silence_loop), each clipped to [0.001, 0.999];
      ``silence_loop`` is None when the samples have no silence at all.
    """
    label_loops = label_exits = sil_loops = sil_exits = 0
    for u in SyntheticGenerator(config, seed).sample_many(int(num_samples)):
        T = u.num_frames
        for start, end in u.token_spans:
            label_loops += end - start - 1
            label_exits += int(end < T)
        # silence runs: the gaps between consecutive words (and the two ends)
        bounds = [0] + [x for span in u.word_spans for x in span] + [T]
        for start, end in zip(bounds[0::2], bounds[1::2]):
            if end > start:
                sil_loops += end - start - 1
                sil_exits += int(end < T)
    label_loop = _clip_prob(label_loops / max(label_loops + label_exits, 1))
    if sil_loops + sil_exits == 0:
        return label_loop, None
    return label_loop, _clip_prob(sil_loops / (sil_loops + sil_exits))


def _clip_prob(p: float, eps: float = 1e-3) -> float:
    return float(min(max(p, eps), 1.0 - eps))


def build_topology(name: str, data: SyntheticConfig, label_loop: Optional[float] = None,
                   silence_loop: Optional[float] = None) -> Topology:
    """The topology ``name`` over the labels of ``data``: ``"hmm"`` or ``"ctc"``.

    ``"hmm"``: :class:`HmmTopology` (ε only at word boundaries; loops estimated when None);
    ``"ctc"``: :class:`CtcTopology` (ε anywhere, no transition model).
    """
    C = data.num_labels
    if name == "ctc":
        return CtcTopology(C, blank=EPSILON)
    if name != "hmm":
        raise FsalignError(f"topology must be one of {TOPOLOGIES}, got {name!r}")
    if label_loop is None or silence_loop is None:
        est_label, est_sil = estimate_loop_probabilities(data)
        label_loop = est_label if label_loop is None else label_loop
        silence_loop = (est_sil if est_sil is not None else 0.5) if silence_loop is None else silence_loop
    return HmmTopology(C, silence=EPSILON, label_loop=label_loop, silence_loop=silence_loop)


class GraphBank:
    """Training graphs of every transcript the data can produce, compiled once.

    When the data distribution has at most ``max_transcripts`` distinct
    transcripts (Σ_n |words|^n over the allowed word counts), all of them are
    compiled up front and a batch's graphs are selected with ``k2.index_fsa``
    (about 60x faster than compiling 100 utterances per step); otherwise every
    batch is compiled.

    Args:
      topology: the label topology.
      data: the data distribution.
      max_transcripts: the limit for precompiling.
    """

    def __init__(self, topology: Topology, data: SyntheticConfig, max_transcripts: int = 5000):
        self.topology = topology
        self.data = data
        self._graphs: Optional[TrainingGraphs] = None
        lo, hi = data.num_words
        V = len(data.words)
        self._offsets = {n: sum(V ** k for k in range(lo, n)) for n in range(lo, hi + 1)}
        if sum(V ** n for n in range(lo, hi + 1)) <= max_transcripts:
            lexicon = data.lexicon
            all_ids = [ids for n in range(lo, hi + 1) for ids in itertools.product(range(V), repeat=n)]
            self._graphs = topology.compile([[list(lexicon[w]) for w in ids] for ids in all_ids])

    def _index(self, ids: Sequence[int]) -> int:
        V = len(self.data.words)
        k = 0
        for w in ids:  # itertools.product order: mixed radix, first word most significant
            k = k * V + int(w)
        return self._offsets[len(ids)] + k

    def compile(self, word_ids: Sequence[Sequence[int]], device="cpu") -> TrainingGraphs:
        """Graphs of utterances given as word indices (``SyntheticBatch.word_ids``), on ``device``."""
        if self._graphs is None:
            lexicon = self.data.lexicon
            return self.topology.compile([[list(lexicon[w]) for w in ids] for ids in word_ids]).to(device)
        idx = torch.tensor([self._index(ids) for ids in word_ids], dtype=torch.int64)
        return self._graphs[idx].to(device)
