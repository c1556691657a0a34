"""Checked inputs, and the intersection of dense scores with training graphs.

Dimension symbols used in this module:
  B: utterances in a batch
  T: frames (the longest utterance)
  C: score-matrix columns

The dense score matrix (``α·log_probs − β·log_prior``, :meth:`fsalign.engine.scales.Scales.dense`)
is intersected here with the training graphs, whose arcs carry the transition log-probs
scaled by ``γ``.
"""
import math
from dataclasses import dataclass
from typing import Optional

import k2
import torch

from fsalign.engine.graphs import scale_transitions
from fsalign.engine.topology import TrainingGraphs
from fsalign.errors import FsalignError

__all__ = ["check_inputs", "intersect", "lattice_cost", "Intersection", "FULL_SUM_BEAM", "VITERBI_BEAM"]

# exact: k2 prunes the output lattice relative to the best path; +inf keeps all of it
FULL_SUM_BEAM = math.inf
# the best path is never pruned, so Viterbi only needs a beam that keeps it
VITERBI_BEAM = 1.0


def check_inputs(log_probs: torch.Tensor, lengths, graphs: TrainingGraphs, finite: bool = True) -> torch.Tensor:
    """Validates scores, lengths and graphs; returns ``lengths`` as int64 on CPU.

    Args:
      log_probs: Tensor of shape (B, T, C), floating point.
      lengths: Tensor (or sequence) of shape (B,), integer frames, 1 <= l <= T.
      graphs: TrainingGraphs with B graphs whose topology has C columns.
      finite: also check that the valid frames hold no NaN/inf (a pass over the whole matrix;
        the chain kernels check what they read instead).

    Raises:
      FsalignError: saying what was expected and what arrived.
    """
    if not isinstance(log_probs, torch.Tensor):
        raise FsalignError(f"log_probs must be a torch.Tensor of shape (B, T, C), got {type(log_probs).__name__}")
    if log_probs.ndim != 3:
        raise FsalignError(f"log_probs must have shape (B, T, C), got shape {tuple(log_probs.shape)}")
    if not log_probs.is_floating_point():
        raise FsalignError(f"log_probs must be floating point, got {log_probs.dtype}")
    B, T, C = log_probs.shape
    if not isinstance(graphs, TrainingGraphs):
        raise FsalignError(
            f"graphs must be the TrainingGraphs returned by topology.compile(...), got {type(graphs).__name__}"
        )
    if len(graphs) != B:
        raise FsalignError(f"log_probs has {B} utterances but graphs has {len(graphs)}")
    if C != graphs.topology.num_labels:
        raise FsalignError(
            f"log_probs has C={C} columns but the {graphs.topology.name} has num_labels="
            f"{graphs.topology.num_labels}"
        )
    lengths = torch.as_tensor(lengths)
    if lengths.ndim != 1 or lengths.shape[0] != B:
        raise FsalignError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise FsalignError(f"lengths must be integer frame counts, got {lengths.dtype}")
    lengths = lengths.to("cpu", torch.int64)
    bad = ((lengths < 1) | (lengths > T)).nonzero().flatten().tolist()
    if bad:
        raise FsalignError(
            "lengths must be in 1..T=%d; " % T
            + ", ".join(f"utterance {i} has {int(lengths[i])}" for i in bad[:10])
        )
    if not finite:
        return lengths
    valid = torch.arange(T, device=log_probs.device)[None, :] < lengths.to(log_probs.device)[:, None]
    finite = torch.isfinite(log_probs).all(dim=2) | ~valid
    if not bool(finite.all()):
        rows = (~finite).any(dim=1).nonzero().flatten().tolist()
        raise FsalignError(
            "log_probs contain NaN or inf in valid frames of "
            + ", ".join(
                f"utterance {i} (first at frame {int((~finite[i]).nonzero()[0])})" for i in rows[:10]
            )
        )
    return lengths


@dataclass
class Intersection:
    """A lattice and how its FSAs map to the batch.

    Attributes:
      lattice: k2 FsaVec, one lattice per entry of ``indices``, same order.
      indices: LongTensor of shape (F,), the batch index of every lattice.
    """

    lattice: Optional[k2.Fsa]
    indices: torch.Tensor


def intersect(
    scores: torch.Tensor,
    lengths: torch.Tensor,
    graphs: TrainingGraphs,
    transition_scale: float,
    output_beam: float,
    frame_idx_name: Optional[str] = None,
) -> Intersection:
    """Intersects the feasible utterances' graphs with their dense scores.

    Utterances shorter than their transcript needs are left out (callers report
    them); lengths may come in any order (k2 needs them sorted: done here).

    Args:
      scores: Tensor of shape (B, T, C), float32.
      lengths: LongTensor of shape (B,) on CPU.
      graphs: B training graphs.
      transition_scale: γ.
      output_beam: k2's lattice beam (``inf`` = exact full sum).
      frame_idx_name: passed to ``k2.intersect_dense``.
    """
    feasible = (lengths >= graphs.min_frames).nonzero().flatten()
    if len(feasible) == 0:
        return Intersection(None, feasible)
    # k2 needs decreasing durations, and graphs in the same order as the dense rows
    order = feasible[torch.sort(-lengths[feasible], stable=True).indices]
    segments = torch.stack([order, torch.zeros_like(order), lengths[order]], dim=1).to(torch.int32)
    dense = k2.DenseFsaVec(scores, segments)
    fsa = graphs.to(scores.device).fsa
    if not torch.equal(order, torch.arange(len(graphs))):
        fsa = k2.index_fsa(fsa, order.to(torch.int32).to(fsa.device))
    fsa = scale_transitions(fsa, transition_scale)
    # k2 prunes (by shrinking the beam) a lattice that would exceed max_states/max_arcs, which an
    # infinite output beam can never satisfy: size the limits to the lattice instead
    states_per_frame, arcs_per_frame = _graph_sizes(fsa)
    frames = lengths[order].to(torch.float64)
    max_states = int(max(15_000_000, 2 * float((frames * states_per_frame).sum())))
    max_arcs = int(min(2**31 - 1, max(2**30, 2 * float((frames * arcs_per_frame).sum()))))
    lattice = k2.intersect_dense(fsa, dense, output_beam=output_beam, max_states=max_states, max_arcs=max_arcs,
                                 frame_idx_name=frame_idx_name)
    return Intersection(lattice, order)


def _graph_sizes(fsa: k2.Fsa):
    """(states, arcs) of every graph of an FsaVec, as float64 Tensors of shape (B,) on CPU."""
    shape = fsa.arcs.shape()
    state_splits = shape.row_splits(1).to("cpu").long()
    arc_splits = shape.row_splits(2).to("cpu").long()[state_splits]
    return (state_splits[1:] - state_splits[:-1]).double(), (arc_splits[1:] - arc_splits[:-1]).double()


def lattice_cost(lengths: torch.Tensor, graphs: TrainingGraphs) -> torch.Tensor:
    """Arcs of each utterance's full lattice (frames x graph arcs): what a k2 full sum holds in memory.

    Returns:
      float64 Tensor of shape (B,) on CPU.
    """
    return lengths.to("cpu", torch.float64) * _graph_sizes(graphs.fsa)[1]

