"""Expected boundary frames: where, on average over all paths, each transcript token starts and ends.

Dimension symbols used in this module:
  B: utterances in a batch
  T: frames (the longest utterance)
  C: score-matrix columns
  N: states of the longest chain
  S: transcript positions (tokens) of the longest transcript

The full sum over the paths of a chain graph defines a distribution over paths
(``P(path) ∝ exp(path score)``, the lattice posterior). A token's start is the first frame of
its state; since every path visits the chain's states in order, the path is at or past state
``j`` at frame ``t`` with probability ``P_t(>= j) = Σ_{i >= j} γ_t(i)``, the state occupancies
``γ`` being the gradient of the total (PyTorch-Struct's "marginals are the gradient of the
log-partition"). The expected first frame of state ``j`` is then

    E[entry_j] = Σ_{t < L} (1 - P_t(>= j)),

a number of frames that need not be whole: the posterior-mean (minimum mean-squared-error)
boundary, finer than the frame step wherever the posterior is spread over neighbouring frames.
A token at position ``p`` in state ``j`` starts at ``E[entry_j]`` and ends where the state after
it begins, ``E[entry_{j+1}]`` (the blank/silence or the next token, whichever the paths take).

The occupancies come from the chain kernels (:mod:`fsalign.engine.chain`): the score matrix is
gathered to one column per state, (B, T, N), and summed over a chain whose state ``j`` reads
column ``j``, so the gradient is the occupancy of every state, not of every label.
"""
from typing import Tuple

import torch

from fsalign.engine.chain import Chain, chain_full_sum

__all__ = ["state_occupancy", "expected_position_frames"]


def state_occupancy(scores: torch.Tensor, lengths: torch.Tensor, chain: Chain,
                    implementation: str = "auto") -> torch.Tensor:
    """Posterior probability of every chain state at every frame.

    Args:
      scores: Tensor of shape (B, T, C), the scaled path scores of every column (α and β applied).
      lengths: Tensor of shape (B,), valid frames.
      chain: the B chains (γ applied to their transitions).
      implementation: of :func:`~fsalign.engine.chain.chain_full_sum`.

    Returns:
      float Tensor of shape (B, T, N): rows sum to 1 on valid frames of utterances that have a
      path, 0 on padding frames and for utterances without one.
    """
    B, T, _ = scores.shape
    N = chain.labels.shape[1]
    per_state = scores.detach().gather(2, chain.labels.to(scores.device)[:, None, :].expand(B, T, N))
    per_state.requires_grad_(True)
    states = torch.arange(N, device=chain.labels.device).expand(B, N).contiguous()
    own = Chain(states, chain.loop, chain.fwd, chain.skip, chain.num_states, chain.positions, chain.first_frame,
                chain.min_rest, chain.min_frames)
    with torch.enable_grad():
        total = chain_full_sum(per_state, lengths, own, implementation)
        feasible = torch.isfinite(total)
        if not bool(feasible.any()):
            return torch.zeros_like(per_state)
        (occupancy,) = torch.autograd.grad(total[feasible].sum(), per_state)
    return torch.where(feasible[:, None, None].to(occupancy.device), occupancy, torch.zeros_like(occupancy))


def expected_position_frames(scores: torch.Tensor, lengths: torch.Tensor, chain: Chain,
                             implementation: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """Expected start and end frame of every transcript token (see the module docstring).

    Args:
      scores: Tensor of shape (B, T, C), the scaled path scores.
      lengths: Tensor of shape (B,), valid frames.
      chain: the B chains.
      implementation: of :func:`~fsalign.engine.chain.chain_full_sum`.

    Returns:
      (starts, ends): float64 Tensors of shape (B, S), in frames from the utterance start
      (a span of frames [k, k+1) has start k and end k+1, as the Viterbi spans); NaN at positions
      beyond a transcript and for utterances without a path.
    """
    lengths = torch.as_tensor(lengths, device=scores.device)
    occupancy = state_occupancy(scores, lengths, chain, implementation).double()
    B, T, N = occupancy.shape
    at_or_past = occupancy.flip(-1).cumsum(-1).flip(-1).clamp(0.0, 1.0)  # P_t(>= j)
    valid = torch.arange(T, device=occupancy.device)[None, :] < lengths[:, None]
    entry = ((1.0 - at_or_past) * valid[:, :, None]).sum(1)  # (B, N)
    entry = torch.cat([entry, lengths[:, None].to(entry)], 1)  # a state past the last: never entered
    positions = chain.positions.to(occupancy.device)
    S = max(int(positions.max()) + 1, 0) if positions.numel() else 0
    state_of = torch.full((B, S), N, dtype=torch.long, device=occupancy.device)
    token = positions >= 0
    rows, cols = token.nonzero(as_tuple=True)
    state_of[rows, positions[rows, cols]] = cols
    starts, ends = entry.gather(1, state_of), entry.gather(1, (state_of + 1).clamp(max=N))
    missing = (state_of == N) | ~(occupancy.sum((1, 2)) > 0)[:, None]
    nan = torch.full_like(starts, float("nan"))
    return torch.where(missing, nan, starts), torch.where(missing, nan, ends)
