"""The chain DP of :mod:`fsalign.engine.chain` vectorised over (B, N) per frame, on any device.

Dimension symbols used in this module:
  B: utterances in a batch
  T: frames (the longest utterance)
  C: score-matrix columns
  N: states of the longest chain

The emissions the DP needs, ``scores[b, t, labels[b, j]]``, are gathered once into a (B, T, N)
tensor (a copy of those entries only, not of the score matrix), checked for NaN/inf on the band
of states some path can reach (as the numba kernels read them) and set to -inf off it. Sums in
float64; then one step per frame of a few (B, N) operations (stay / +1 / +2 moves as shifts).
The numba kernels and this module give the same totals, paths (the same tie rule: strict
comparisons, the higher predecessor stays) and gradients up to rounding.
"""
import torch

__all__ = ["viterbi", "forward", "backward"]

_NEG_INF = float("-inf")


def _tables(scores: torch.Tensor, lengths: torch.Tensor, chain):
    """Emissions (B, T, N) gathered once (-inf off the band), (B, N) move scores, first bad frames (B,)."""
    B, T, _ = scores.shape
    N = chain.labels.shape[1]
    emit = scores.gather(2, chain.labels[:, None, :].expand(B, T, N))
    j = torch.arange(N, device=scores.device)[None, :]
    n = chain.num_states[:, None]
    valid = j < n
    t = torch.arange(T, device=scores.device)[None, :, None]
    band = (chain.first_frame[:, None, :] <= t) & (chain.min_rest[:, None, :] <= lengths[:, None, None] - t)
    band &= (lengths >= chain.min_frames)[:, None, None]  # what the numba kernels read
    bad = (~torch.isfinite(emit) & band).any(2)
    emit.masked_fill_(~band, _NEG_INF)  # a copy: gather does not share the scores' memory
    first = torch.where(bad, torch.arange(T, device=scores.device)[None, :], torch.full_like(bad, T, dtype=torch.long))
    first = first.min(1).values
    first = torch.where(first < T, first, torch.full_like(first, -1))
    ninf = torch.full((B, N), _NEG_INF, dtype=torch.float64, device=scores.device)
    fwd, loop = chain.fwd.to(torch.float64), chain.loop.to(torch.float64)
    w0 = torch.where(valid, loop, ninf)  # enter j by its loop, from j-1, from j-2
    w1 = torch.cat([ninf[:, :1], torch.where(valid[:, 1:], fwd[:, :-1], ninf[:, 1:])], 1)
    w2 = torch.cat([ninf[:, :2], torch.where(valid[:, 2:] & chain.skip[:, :-2], fwd[:, :-2], ninf[:, 2:])], 1)
    init = torch.where(valid & (j < 2), torch.zeros_like(ninf), ninf)
    final = torch.where(valid & (j >= n - 2), torch.zeros_like(ninf), ninf)
    return emit, (w0, w1, w2), init, final, first


def _shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """X moved k states up (k > 0) or down (k < 0) along dim 1, filled with -inf."""
    pad = torch.full_like(x[:, :abs(k)], _NEG_INF)
    return torch.cat([pad, x[:, :-k]], 1) if k > 0 else torch.cat([x[:, -k:], pad], 1)


def _lse3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    m = torch.maximum(torch.maximum(a, b), c)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m + torch.log(torch.exp(a - m) + torch.exp(b - m) + torch.exp(c - m))


def viterbi(scores: torch.Tensor, lengths: torch.Tensor, chain):
    """Best paths: (best (B,) float64, states (B, T) int64, first bad frame (B,) int64, -1: none).

    Args: as :func:`fsalign.engine.chain.chain_viterbi`, everything on the device of ``scores``.
    """
    B, T, _ = scores.shape
    emit, (w0, w1, w2), init, final, first_bad = _tables(scores, lengths, chain)
    alpha = init + emit[:, 0].double()
    bps = torch.zeros((T, B, chain.labels.shape[1]), dtype=torch.int8, device=scores.device)
    for t in range(1, int(lengths.max())):
        v, arg = alpha + w0, torch.zeros_like(bps[t])
        for k, c in ((1, _shift(alpha, 1) + w1), (2, _shift(alpha, 2) + w2)):
            better = c > v  # strict: the higher predecessor keeps a tie
            v, arg = torch.where(better, c, v), torch.where(better, torch.full_like(arg, k), arg)
        active = (t < lengths)[:, None]
        alpha = torch.where(active, v + emit[:, t].double(), alpha)
        bps[t] = arg
    n = chain.num_states
    last = alpha.gather(1, (n - 1)[:, None]).squeeze(1)
    second = alpha.gather(1, (n - 2).clamp(min=0)[:, None]).squeeze(1)
    second = torch.where(n >= 2, second, torch.full_like(last, _NEG_INF))
    state = torch.where(second > last, n - 2, n - 1)
    best = torch.maximum(last, second)
    states = torch.full((B, T), -1, dtype=torch.int64, device=scores.device)
    for t in range(T - 1, 0, -1):
        active = t < lengths
        states[:, t] = torch.where(active, state, states[:, t])
        step = bps[t].gather(1, state[:, None]).squeeze(1).long()
        state = torch.where(active, state - step, state)
    states[:, 0] = state
    states[best == _NEG_INF] = -1
    return best, states, first_bad


def forward(scores: torch.Tensor, lengths: torch.Tensor, chain):
    """Forward algorithm: (totals (B,) float64, what :func:`backward` needs, first bad frame (B,)).

    Args: as :func:`viterbi`.
    """
    B, T, _ = scores.shape
    emit, (w0, w1, w2), init, final, first_bad = _tables(scores, lengths, chain)
    alphas = torch.empty((T, B, chain.labels.shape[1]), dtype=torch.float64, device=scores.device)
    alpha = alphas[0] = init + emit[:, 0].double()
    for t in range(1, int(lengths.max())):
        new = _lse3(alpha + w0, _shift(alpha, 1) + w1, _shift(alpha, 2) + w2) + emit[:, t].double()
        alpha = alphas[t] = torch.where((t < lengths)[:, None], new, alpha)
    totals = torch.logsumexp(alpha + final, 1)  # -inf where no final state is reached
    return totals, (emit, alphas, lengths, chain, final, totals), first_bad


def backward(grad, gscale, emit, alphas, lengths, chain, final, totals) -> None:
    """Adds ``gscale[b]`` x the occupancies (forward-backward) into ``grad`` (B, T, C), by label.

    Args:
      grad: (B, T, C), zero beforehand, dtype of the scores.
      gscale: (B,) float64, the gradient of the loss w.r.t. each total.
      emit, alphas, lengths, chain, final, totals: what :func:`forward` returned for it.
    """
    B, T, _ = grad.shape
    n = chain.num_states[:, None]
    j = torch.arange(chain.labels.shape[1], device=grad.device)[None, :]
    fwd = chain.fwd.to(torch.float64)
    ninf = torch.full_like(final, _NEG_INF)
    leave0 = torch.where(j < n, chain.loop.to(torch.float64), ninf)  # leave j by loop, to j+1, to j+2
    leave1 = torch.where(j + 1 < n, fwd, ninf)
    leave2 = torch.where((j + 2 < n) & chain.skip, fwd, ninf)
    ok = torch.isfinite(totals) & (gscale != 0)
    scale = torch.where(ok, gscale, torch.zeros_like(gscale))[:, None]
    tot = torch.where(ok, totals, torch.zeros_like(totals))[:, None]
    beta = final
    for t in range(int(lengths.max()) - 1, -1, -1):
        beta = torch.where((t == lengths - 1)[:, None], final, beta)
        active = ((t < lengths) & ok)[:, None]
        occ = torch.where(active, torch.exp(alphas[t] + beta - tot) * scale, torch.zeros_like(beta))
        grad[:, t].scatter_add_(1, chain.labels, occ.to(grad.dtype))
        if t:
            eb = emit[:, t].double() + beta
            beta = _lse3(leave0 + eb, leave1 + _shift(eb, -1), leave2 + _shift(eb, -2))
