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


def _emissions(scores: torch.Tensor, lengths: torch.Tensor, chain, t0: int = 0, t1=None):
    """Emissions of frames [t0, t1) (B, t1 - t0, N) gathered (-inf off the band), first bad frames (B,), -1: none."""
    B, T, _ = scores.shape
    t1 = T if t1 is None else t1
    N = chain.labels.shape[1]
    emit = scores[:, t0:t1].gather(2, chain.labels[:, None, :].expand(B, t1 - t0, N))
    t = torch.arange(t0, t1, device=scores.device)[None, :, None]
    band = (chain.first_frame[:, None, :] <= t) & (chain.min_rest[:, None, :] <= lengths[:, None, None] - t)
    band &= (lengths >= chain.min_frames)[:, None, None]  # what the numba kernels read
    bad = (~torch.isfinite(emit) & band).any(2)
    emit.masked_fill_(~band, _NEG_INF)  # a copy: gather does not share the scores' memory
    first = torch.where(bad, t[0, :, 0][None, :], torch.full_like(bad, T, dtype=torch.long))
    first = first.min(1).values
    return emit, torch.where(first < T, first, torch.full_like(first, -1))


def _moves(chain):
    """(B, N) scores of entering j by its loop, from j-1, from j-2; initial and final scores."""
    N = chain.labels.shape[1]
    j = torch.arange(N, device=chain.labels.device)[None, :]
    n = chain.num_states[:, None]
    valid = j < n
    ninf = torch.full(chain.labels.shape, _NEG_INF, dtype=torch.float64, device=chain.labels.device)
    fwd, loop = chain.fwd.to(torch.float64), chain.loop.to(torch.float64)
    w0 = torch.where(valid, loop, ninf)
    w1 = torch.cat([ninf[:, :1], torch.where(valid[:, 1:], fwd[:, :-1], ninf[:, 1:])], 1)
    w2 = torch.cat([ninf[:, :2], torch.where(valid[:, 2:] & chain.skip[:, :-2], fwd[:, :-2], ninf[:, 2:])], 1)
    init = torch.where(valid & (j < 2), torch.zeros_like(ninf), ninf)
    final = torch.where(valid & (j >= n - 2), torch.zeros_like(ninf), ninf)
    return (w0, w1, w2), init, final


def _tables(scores: torch.Tensor, lengths: torch.Tensor, chain):
    """Emissions (B, T, N) gathered once (-inf off the band), (B, N) move scores, first bad frames (B,)."""
    emit, first = _emissions(scores, lengths, chain)
    moves, init, final = _moves(chain)
    return emit, moves, init, final, first


def _shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """X moved k states up (k > 0) or down (k < 0) along dim 1, filled with -inf."""
    pad = torch.full_like(x[:, :abs(k)], _NEG_INF)
    return torch.cat([pad, x[:, :-k]], 1) if k > 0 else torch.cat([x[:, -k:], pad], 1)


def _lse3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    m = torch.maximum(torch.maximum(a, b), c)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m + torch.log(torch.exp(a - m) + torch.exp(b - m) + torch.exp(c - m))


def _max_frames(alpha, emit, moves, lengths, t0: int, bps=None):
    """Advances the best scores ``alpha`` (B, N) over frames t0 .. t0 + F - 1 of ``emit`` (B, F, N).

    With ``bps`` (F, B, N) int8, the backpointers of those frames go into it (strict comparisons:
    the higher predecessor keeps a tie). Returns the scores after the last frame.
    """
    w0, w1, w2 = moves
    for k in range(emit.shape[1]):
        t = t0 + k
        v, arg = alpha + w0, torch.zeros(alpha.shape, dtype=torch.int8, device=alpha.device)
        for d, c in ((1, _shift(alpha, 1) + w1), (2, _shift(alpha, 2) + w2)):
            better = c > v
            v = torch.where(better, c, v)
            if bps is not None:
                arg = torch.where(better, torch.full_like(arg, d), arg)
        alpha = torch.where((t < lengths)[:, None], v + emit[:, k].double(), alpha)
        if bps is not None:
            bps[k] = arg
    return alpha


def _trace(states, state, bps, lengths, t0: int) -> torch.Tensor:
    """Follows the backpointers ``bps`` of frames t0 .. t0 + F - 1 back from ``state`` (B,) at the last of them.

    Writes ``states[:, t]`` for those frames and returns the state at frame t0 - 1.
    """
    for k in range(bps.shape[0] - 1, -1, -1):
        t = t0 + k
        active = t < lengths
        states[:, t] = torch.where(active, state, states[:, t])
        step = bps[k].gather(1, state[:, None]).squeeze(1).long()
        state = torch.where(active, state - step, state)
    return state


def viterbi(scores: torch.Tensor, lengths: torch.Tensor, chain, segment=None):
    """Best paths: (best (B,) float64, states (B, T) int64, first bad frame (B,) int64, -1: none).

    Args:
      segment: None: the backpointers of all frames are kept; K: the checkpointed backtrace of
        :mod:`fsalign.engine.chain` (the best scores of every K-th frame kept, the emissions and
        backpointers of one segment of K frames at a time recomputed), the same result.
      The others: as :func:`fsalign.engine.chain.chain_viterbi`, everything on the device of ``scores``.
    """
    B, T, _ = scores.shape
    moves, init, final = _moves(chain)
    N, L = chain.labels.shape[1], int(lengths.max())
    K = T if segment is None else int(segment)
    starts = list(range(1, L, K))  # segment s: frames starts[s] .. starts[s] + K - 1
    emit, first_bad = _emissions(scores, lengths, chain, 0, 1 if segment is not None else T)
    alpha = init + emit[:, 0].double()
    bps = None if segment is not None else torch.zeros((T, B, N), dtype=torch.int8, device=scores.device)
    kept = []
    for t0 in starts:
        t1 = min(t0 + K, L)
        if segment is None:
            chunk = emit[:, t0:t1]
        else:
            kept.append(alpha)
            chunk, bad = _emissions(scores, lengths, chain, t0, t1)
            first_bad = torch.where((first_bad < 0) & (bad >= 0), bad, first_bad)
        alpha = _max_frames(alpha, chunk, moves, lengths, t0, None if bps is None else bps[t0:t1])
    n = chain.num_states
    last = alpha.gather(1, (n - 1)[:, None]).squeeze(1)
    second = alpha.gather(1, (n - 2).clamp(min=0)[:, None]).squeeze(1)
    second = torch.where(n >= 2, second, torch.full_like(last, _NEG_INF))
    state = torch.where(second > last, n - 2, n - 1)
    best = torch.maximum(last, second)
    states = torch.full((B, T), -1, dtype=torch.int64, device=scores.device)
    if segment is None:
        state = _trace(states, state, bps[1:L], lengths, 1)
    else:
        for t0, alpha in zip(reversed(starts), reversed(kept)):
            t1 = min(t0 + K, L)
            chunk, _ = _emissions(scores, lengths, chain, t0, t1)
            seg = torch.zeros((t1 - t0, B, N), dtype=torch.int8, device=scores.device)
            _max_frames(alpha, chunk, moves, lengths, t0, seg)
            state = _trace(states, state, seg, lengths, t0)
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
