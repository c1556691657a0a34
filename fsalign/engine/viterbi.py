"""Viterbi (best-path) alignment in the max semiring.

Dimension symbols used in this module:
  B: utterances in a batch
  T: frames (the longest utterance)
  C: score-matrix columns
"""
from typing import List, Optional

import k2
import numpy as np
import torch

from fsalign.engine.chain import chain_viterbi, graphs_chain, path_labels, resolve_engine
from fsalign.engine.lattice import VITERBI_BEAM, check_inputs, intersect
from fsalign.engine.scales import Scales
from fsalign.engine.topology import TrainingGraphs
from fsalign.errors import FsalignError, InfeasibleAlignment
from fsalign.results.alignment import Alignment, spans_from_path

__all__ = ["viterbi_align", "best_paths"]

_ON_INFEASIBLE = ("raise", "skip")


def viterbi_align(log_probs: torch.Tensor, lengths, graphs: TrainingGraphs, posterior_scale: float = 1.0,
                  prior_scale: float = 0.0, log_prior: Optional[torch.Tensor] = None, transition_scale: float = 1.0,
                  on_infeasible: str = "raise", engine: str = "auto",
                  memory_budget: Optional[int] = None) -> List[Optional[Alignment]]:
    """Best path of every utterance under the path score of :func:`full_sum_loss`.

    The feasibility condition: an utterance needs at least as many frames as
    its transcript under the topology (CTC: tokens + equal neighbours; relaxed
    and HMM: tokens; a custom topology: the shortest path of its graph).

    Args:
      log_probs: Tensor of shape (B, T, C), any score matrix (posteriors,
        gradient scores); padding frames are ignored.
      lengths: Tensor of shape (B,), valid frames per utterance, in any order.
      graphs: TrainingGraphs from ``topology.compile(transcripts)``.
      posterior_scale: α.
      prior_scale: β.
      log_prior: Tensor of shape (C,) or (B, C), or None.
      transition_scale: γ.
      on_infeasible: "raise" (default) or "skip" (the entry is then None).
      engine: "auto" (the exact chain kernel for the built-in topologies, k2 for any other),
        "chain" or "k2". Among equally good paths the chain kernel takes the one that moves
        on as early as it can; k2 may take another one of them.
      memory_budget: bytes the chain kernel's backpointers may take before it switches to the
        checkpointed backtrace (the same paths in O(sqrt(T) x states) memory; None:
        :data:`fsalign.engine.chain.VITERBI_MEMORY_BUDGET`, 1 GiB). k2 builds the whole lattice.

    Returns:
      One :class:`Alignment` per utterance, in batch order.

    Raises:
      InfeasibleAlignment: utterances too short for their transcripts (all of
        them named, with frames given and needed), unless ``on_infeasible="skip"``.
      FsalignError: malformed inputs.
    """
    return best_paths(log_probs, lengths, graphs, Scales(posterior_scale, prior_scale, log_prior, transition_scale),
                      on_infeasible, engine, memory_budget)


def best_paths(log_probs: torch.Tensor, lengths, graphs: TrainingGraphs, scales: Scales = Scales(),
               on_infeasible: str = "raise", engine: str = "auto",
               memory_budget: Optional[int] = None) -> List[Optional[Alignment]]:
    """:func:`viterbi_align` with the path-score parameters as one :class:`~fsalign.engine.scales.Scales`."""
    if on_infeasible not in _ON_INFEASIBLE:
        raise FsalignError(f"on_infeasible must be one of {_ON_INFEASIBLE}, got {on_infeasible!r}")
    engine = resolve_engine(graphs, engine)
    lengths = check_inputs(log_probs, lengths, graphs, finite=engine == "k2")
    short = (lengths < graphs.min_frames).nonzero().flatten().tolist()
    if short and on_infeasible == "raise":
        raise InfeasibleAlignment(
            short, [int(lengths[i]) for i in short], [int(graphs.min_frames[i]) for i in short]
        )
    with torch.no_grad():
        scores = scales.detach().dense(log_probs.detach())
        if engine == "chain":
            return _chain_paths(scores, lengths, graphs, scales.transition_scale, memory_budget)
        inter = intersect(scores, lengths, graphs, scales.transition_scale, VITERBI_BEAM)
    out: List[Optional[Alignment]] = [None] * len(graphs)
    if inter.lattice is None:
        return out
    best = k2.shortest_path(inter.lattice, use_double_scores=True)
    totals = best.get_tot_scores(log_semiring=False, use_double_scores=True).cpu().tolist()
    best = best.to("cpu")
    arc_splits = best.arcs.shape().row_splits(2)[best.arcs.shape().row_splits(1).long()].long()
    labels_all = best.labels.numpy()
    aux_all = best.aux_labels.numpy()
    topo = graphs.topology
    for k, b in enumerate(inter.indices.tolist()):
        lo, hi = int(arc_splits[k]), int(arc_splits[k + 1]) - 1  # drop the final arc
        labels, aux = labels_all[lo:hi], aux_all[lo:hi]
        if len(labels) != int(lengths[b]):
            raise RuntimeError(f"utterance {b}: best path has {len(labels)} frames, expected {int(lengths[b])}")
        out[b] = topo.path_alignment(labels, aux, graphs.transcripts[b], float(totals[k]))
    return out


def _chain_paths(scores: torch.Tensor, lengths: torch.Tensor, graphs: TrainingGraphs, transition_scale: float,
                 memory_budget: Optional[int] = None) -> List[Optional[Alignment]]:
    """Best paths of built-in chain graphs (None for infeasible utterances)."""
    chain = graphs_chain(graphs, transition_scale, scores.device)
    best, states = chain_viterbi(scores, lengths, chain, memory_budget=memory_budget)
    labels_all = path_labels(states, chain).cpu().numpy()
    states = states.cpu()
    positions = chain.positions.cpu().gather(1, states.clamp(min=0)).numpy()
    states, best = states.numpy(), best.cpu().tolist()
    topo = graphs.topology
    out: List[Optional[Alignment]] = [None] * len(graphs)
    for b in range(len(graphs)):
        n = int(lengths[b])
        if states[b, 0] < 0:
            continue
        path, labels = states[b, :n], labels_all[b, :n]
        # a token starts on the first frame of each token state of the path
        starts = (positions[b, :n] >= 0) & np.concatenate([[True], path[1:] != path[:-1]])
        tokens, words = spans_from_path(labels, starts.astype(np.int64), graphs.transcripts[b],
                                        topo.non_token_labels, None)
        out[b] = Alignment(torch.from_numpy(labels.astype(np.int64)), float(best[b]), tokens, words)
    return out
