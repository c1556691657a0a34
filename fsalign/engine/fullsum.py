"""Full-sum scores (eq. 5, 6) and soft alignments (eq. 9).

Dimension symbols used in this module:
  B: utterances in a batch
  T: frames (the longest utterance)
  C: score-matrix columns

The soft alignment is the gradient of the total (log-semiring) score w.r.t.
the dense score matrix — "marginals are the gradient of the log-partition" —
computed with ``torch.autograd.grad``, never by a second hand-written pass.

:func:`total_scores` and :func:`occupancies` take the path-score parameters as one
:class:`~fsalign.engine.scales.Scales`; :func:`full_sum_loss`, :func:`full_sum_scores` and
:func:`soft_alignment` are the same with the scales as keyword arguments (DESIGN.md's API).
"""
from typing import Optional

import torch

from fsalign.engine.chain import chain_full_sum, graphs_chain, resolve_engine
from fsalign.engine.lattice import FULL_SUM_BEAM, check_inputs, intersect, lattice_cost
from fsalign.engine.scales import Scales
from fsalign.engine.topology import TrainingGraphs

__all__ = ["full_sum_loss", "full_sum_scores", "soft_alignment", "total_scores", "occupancies"]


def total_scores(log_probs: torch.Tensor, lengths, graphs: TrainingGraphs, scales: Scales = Scales(),
                 engine: str = "auto") -> torch.Tensor:
    """Log of the sum over all paths of exp(path score) (eq. 6 inside the log).

    Args:
      log_probs: Tensor of shape (B, T, C): normalised log-probabilities (any
        floating dtype; computed in float32). Padding frames are ignored.
      lengths: Tensor of shape (B,), valid frames per utterance, in any order.
      graphs: TrainingGraphs from ``topology.compile(transcripts)``.
      scales: α, β with its log prior, γ.
      engine: "auto" (the exact chain kernels for the built-in topologies, k2 otherwise),
        "chain" or "k2" (:data:`fsalign.engine.chain.ENGINES`).

    Returns:
      Tensor of shape (B,), float64, differentiable w.r.t. ``log_probs`` (and the log
      prior); ``-inf`` for an utterance shorter than its transcript needs (zero gradient).

    Raises:
      FsalignError: malformed inputs (shapes, dtypes, lengths, NaN/inf scores).
    """
    engine = resolve_engine(graphs, engine)
    lengths = check_inputs(log_probs, lengths, graphs, finite=engine == "k2")
    return _total(scales.dense(log_probs), lengths, graphs, scales.transition_scale, engine)


def occupancies(log_probs: torch.Tensor, lengths, graphs: TrainingGraphs, scales: Scales = Scales(),
                engine: str = "auto") -> torch.Tensor:
    """Soft alignment v (eq. 9): per frame, the posterior of every column over all paths.

    Args: as :func:`total_scores`.

    Returns:
      Tensor of shape (B, T, C), float32, no grad: rows of valid frames sum to 1;
      padding frames and utterances too short for their transcript are 0.
    """
    engine = resolve_engine(graphs, engine)
    lengths = check_inputs(log_probs, lengths, graphs, finite=engine == "k2")
    with torch.no_grad():
        scores = scales.dense(log_probs)
    scores = scores.detach().requires_grad_(True)
    with torch.enable_grad():
        total = _total(scores, lengths, graphs, scales.transition_scale, engine)
        finite = torch.isfinite(total)
        if not bool(finite.any()):
            return torch.zeros_like(scores).detach()
        (v,) = torch.autograd.grad(total[finite].sum(), scores)
    return v


def full_sum_scores(log_probs: torch.Tensor, lengths, graphs: TrainingGraphs, posterior_scale: float = 1.0,
                    prior_scale: float = 0.0, log_prior: Optional[torch.Tensor] = None,
                    transition_scale: float = 1.0, engine: str = "auto") -> torch.Tensor:
    """:func:`total_scores` with the scales as keyword arguments (``-full_sum_loss``)."""
    return total_scores(log_probs, lengths, graphs, Scales(posterior_scale, prior_scale, log_prior, transition_scale),
                        engine)


def full_sum_loss(log_probs: torch.Tensor, lengths, graphs: TrainingGraphs, posterior_scale: float = 1.0,
                  prior_scale: float = 0.0, log_prior: Optional[torch.Tensor] = None,
                  transition_scale: float = 1.0, engine: str = "auto") -> torch.Tensor:
    """Full-sum negative log-likelihood per utterance (eq. 5; eq. 6 with scales).

    ``-log Σ_paths exp(Σ_t [α·log_probs[t, y_t] − β·log_prior[y_t]] + γ·Σ transition log-probs)``.
    With the CTC topology and α=1, β=0 (and no loops) this is the CTC loss.

    Args:
      log_probs: Tensor of shape (B, T, C): normalised log-probabilities (any
        floating dtype; computed in float32). Padding frames are ignored.
      lengths: Tensor of shape (B,), valid frames per utterance, in any order.
      graphs: TrainingGraphs from ``topology.compile(transcripts)``.
      posterior_scale: α.
      prior_scale: β.
      log_prior: Tensor of shape (C,) or (B, C) (gradients flow into it if it
        requires grad), or None.
      transition_scale: γ, multiplies the topology's transition log-probs.
      engine: "auto" (the exact chain kernels for the built-in topologies, k2 for any other),
        "chain" or "k2" (the same numbers up to float rounding).

    Returns:
      Tensor of shape (B,), float64: the NLL, ``+inf`` for an utterance shorter
      than its transcript needs (its gradient is zero; the batch still trains).

    Raises:
      FsalignError: malformed inputs (shapes, dtypes, lengths, NaN/inf scores).
    """
    return -full_sum_scores(log_probs, lengths, graphs, posterior_scale, prior_scale, log_prior, transition_scale,
                            engine)


def soft_alignment(log_probs: torch.Tensor, lengths, graphs: TrainingGraphs, posterior_scale: float = 1.0,
                   prior_scale: float = 0.0, log_prior: Optional[torch.Tensor] = None,
                   transition_scale: float = 1.0, engine: str = "auto") -> torch.Tensor:
    """:func:`occupancies` (eq. 9) with the scales as keyword arguments (see :func:`full_sum_loss`)."""
    return occupancies(log_probs, lengths, graphs, Scales(posterior_scale, prior_scale, log_prior, transition_scale),
                       engine)


# a k2 full sum holds every arc of the lattice: utterances are summed in groups of at most this many
MAX_LATTICE_ARCS = 20_000_000


def _total(scores: torch.Tensor, lengths: torch.Tensor, graphs: TrainingGraphs, transition_scale: float,
           engine: str = "k2") -> torch.Tensor:
    """(B,) float64 log-semiring totals; -inf for infeasible utterances."""
    if engine == "chain":
        return chain_full_sum(scores, lengths, graphs_chain(graphs, transition_scale, scores.device))
    B = scores.shape[0]
    total = torch.full((B,), float("-inf"), dtype=torch.float64, device=scores.device)
    feasible = (lengths >= graphs.min_frames).nonzero().flatten()
    if len(feasible) == 0:
        # keep the graph connected to the inputs so .backward() works (zero grad)
        return total + 0.0 * scores.sum().double()
    cost = lattice_cost(lengths, graphs)
    for group in _groups(feasible, cost, MAX_LATTICE_ARCS):
        inter = intersect(scores[group], lengths[group], graphs[group], transition_scale, FULL_SUM_BEAM)
        tot = inter.lattice.get_tot_scores(log_semiring=True, use_double_scores=True)
        total = total.index_put((group[inter.indices].to(scores.device),), tot)
    return total


def _groups(indices: torch.Tensor, cost: torch.Tensor, budget: float):
    """Consecutive groups of ``indices`` whose ``cost`` adds up to at most ``budget`` (one at least)."""
    group, spent = [], 0.0
    for i in indices.tolist():
        if group and spent + float(cost[i]) > budget:
            yield torch.tensor(group)
            group, spent = [], 0.0
        group.append(i)
        spent += float(cost[i])
    if group:
        yield torch.tensor(group)
