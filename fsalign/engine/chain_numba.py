"""CPU kernels of the chain DP (see :mod:`fsalign.engine.chain`), compiled with numba.

Dimension symbols used in this module:
  B: utterances in a batch
  T: frames (the longest utterance)
  C: score-matrix columns
  N: states of the longest chain
  A: sum over utterances of frames x (states + 2) (the forward variables kept for the backward)

Every kernel loops over the batch with ``prange`` (one utterance per task) and, per frame t,
works on the band of states some path can occupy then, [lo, hi) (from the chain's
``first_frame`` and ``min_rest``; predecessors of band states are band states, so the DP over
the band is the whole DP), gathering ``scores[b, t, labels[b, j]]`` for those states only: the
score matrix is neither copied nor checked as a whole; utterances shorter than ``min_frames``
are not read at all. An emission that is NaN or infinite sets ``bad[b]`` to its
frame (the first one) and the utterance is left; the caller raises. Arithmetic is float64
whatever the dtype of the scores. Each kernel is compiled once per scores dtype (float32,
float64; scores of any strides) and cached on disk; results do not depend on the number of
threads, since utterances share no sums.

The per-frame loops over states are written so that LLVM vectorises them (indices from 0 on
offset views, selects instead of branches), with :func:`_exp` and :func:`_log13`, float64
polynomial versions of exp and log accurate to about 1.5 ulp (libm's are scalar calls).
"""
import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.extending import intrinsic

__all__ = ["viterbi", "viterbi_checkpointed", "forward", "backward"]

_NEG_INF = -np.inf
_EXP_BITS = 0x7FF0000000000000
_OPTS = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
_jit = numba.njit(inline="always", **_OPTS)


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float64 as int64."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return numba.types.int64(numba.types.float64), codegen


@intrinsic
def _from_bits(typingctx, x):
    """The float64 of IEEE bits given as int64."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return numba.types.float64(numba.types.int64), codegen


@_jit
def _exp(x):
    """exp(x) for x <= 0 (0 below -708, also for -inf)."""
    xc = max(x, -708.0)
    k = math.floor(xc * 1.4426950408889634 + 0.5)
    r = (xc - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10  # |r| <= ln2 / 2
    p = 1.0 / 6227020800.0
    for c in (479001600.0, 39916800.0, 3628800.0, 362880.0, 40320.0, 5040.0, 720.0, 120.0,
              24.0, 6.0, 2.0, 1.0, 1.0):
        p = p * r + 1.0 / c
    return p * _from_bits((np.int64(k) + 1023) << 52) * np.float64(x > -708.0)


@_jit
def _log13(s):
    """log(s) for 1 <= s <= 3 (atanh series around 1 or 2)."""
    big = np.float64(s >= 1.4142135623730951)
    x = s * (1.0 - 0.5 * big)
    z = (x - 1.0) / (x + 1.0)  # |z| <= 0.2
    z2 = z * z
    q = 1.0 / 25.0
    for c in (23.0, 21.0, 19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0):
        q = q * z2 + 1.0 / c
    return 2.0 * z * q + 0.6931471805599453 * big


@_jit
def _lse3(a0, a1, a2):
    """log(exp(a0) + exp(a1) + exp(a2)), -inf when all three are."""
    m = max(a0, max(a1, a2))
    mm = max(m, -1e300)
    s = _exp(a0 - mm) + _exp(a1 - mm) + _exp(a2 - mm)
    return mm + _log13(max(s, 1.0)) + (m - mm)  # m - mm: 0, or -inf when m is


@_jit
def _gather(row, lab, out, n):
    """out[:n] = row[lab[:n]] as float64; returns True when one of them is NaN or inf."""
    nonfinite = 0
    for i in range(n):
        v = np.float64(row[lab[i]])
        out[i] = v
        nonfinite |= np.int64((_bits(v) & _EXP_BITS) == _EXP_BITS)
    return nonfinite != 0


@_jit
def _moves(n, loop, fwd, skip):
    """(n + 2,) scores of entering j from j-1, from j-2, of leaving j to j+2 (-inf: no move)."""
    w1, w2, u2 = np.full(n + 2, _NEG_INF), np.full(n + 2, _NEG_INF), np.full(n + 2, _NEG_INF)
    for j in range(n):
        if j >= 1:
            w1[j] = fwd[j - 1]
        if j >= 2 and skip[j - 2]:
            w2[j] = fwd[j - 2]
        if skip[j] and j + 2 < n:
            u2[j] = fwd[j]
    return w1, w2, u2


@_jit
def _band(t, L, n, first, rest, lo, hi):
    """States on some path at frame t: [lo, hi) (both move monotonically with t)."""
    while hi < n and first[hi] <= t:
        hi += 1
    while hi > 0 and first[hi - 1] > t:
        hi -= 1
    while lo < n and rest[lo] > L - t:
        lo += 1
    while lo > 0 and rest[lo - 1] <= L - t:
        lo -= 1
    return lo, hi


@_jit
def _max_step(prev, cur, lp, w1, w2, e, lo, hi):
    """Scores of frame t over the band [lo, hi): ``cur[2 + j]`` from ``prev`` (frame t - 1) and emissions ``e``."""
    p0, p1, p2, c = prev[lo + 2:], prev[lo + 1:], prev[lo:], cur[lo + 2:]
    lpj, w1j, w2j, ej = lp[lo:], w1[lo:], w2[lo:], e[lo:]
    for i in range(hi - lo):  # its own loop: LLVM vectorises it (one store stream)
        c[i] = max(max(p0[i] + lpj[i], p1[i] + w1j[i]), p2[i] + w2j[i]) + ej[i]


@_jit
def _argmax_step(prev, lp, w1, w2, arg, lo, hi):
    """Backpointers of frame t over the band: 0 (loop), 1 (from j-1), 2 (from j-2) into ``arg[j]``.

    Strict comparisons: on equal scores the higher predecessor stays.
    """
    p0, p1, p2, a = prev[lo + 2:], prev[lo + 1:], prev[lo:], arg[lo:]
    lpj, w1j, w2j = lp[lo:], w1[lo:], w2[lo:]
    for i in range(hi - lo):
        v = p0[i] + lpj[i]
        c1 = p1[i] + w1j[i]
        k1 = np.float64(c1 > v)
        k2 = np.float64(p2[i] + w2j[i] > max(v, c1))
        a[i] = np.int8(k1 + k2 * (2.0 - k1))


@_jit
def _final_state(prev, n):
    """The final state of the best path from the scores of the last frame (n-1 unless n-2 is better)."""
    f = n - 1
    if n >= 2 and prev[n] > prev[n + 1]:
        f = n - 2
    return f


def _viterbi(scores, lengths, nstates, labels, loop, fwd, skip, first, rest, need, segment, best, states, bad):
    """Max-plus DP with backtrace; ties go to the highest predecessor (loop, then j-1, then j-2).

    ``segment`` K = 0: the backpointers of every frame are kept during the one forward pass, O(T x N)
    memory. K >= 1: the backtrace is checkpointed, O((T / K + K) x N) memory and the same path bit
    for bit: the forward pass keeps only the scores of every K-th frame, and the backtrace goes
    through the segments of frames (sK, (s+1)K] from the last one back, recomputing each segment's
    backpointers from the scores kept at frame sK with the same arithmetic (so the same
    backpointers) and following the path through them; the DP is computed twice.

    Args:
      scores: (B, T, C) float32/float64, read in place.
      lengths, nstates, need: (B,) int64 (need: min_frames).
      labels, first, rest: (B, N) int64; loop, fwd: (B, N) float64; skip: (B, N) bool.
      segment: K >= 0, frames per recomputed segment (0: no recomputation).
      best: (B,) float64 out, -inf beforehand; stays -inf where no path exists.
      states: (B, T) int64 out, -1 beforehand; the state of every frame.
      bad: (B,) int64 out, -1 beforehand; first frame with a non-finite emission.
    """
    for b in numba.prange(scores.shape[0]):
        L, n = lengths[b], nstates[b]
        if L < need[b]:
            continue
        lab, lp = labels[b], loop[b]
        w1, w2, _ = _moves(n, loop[b], fwd[b], skip[b])
        prev, cur, e = np.full(n + 2, _NEG_INF), np.full(n + 2, _NEG_INF), np.empty(n)
        whole = segment == 0
        K = max(segment, 1)
        kept = np.empty((0 if whole else (L - 2) // K + 1, n + 2))  # kept[s]: the scores of frame sK
        bp = np.zeros((L if whole else K, n), np.int8)
        lo, hi = 0, 0
        for t in range(L):
            lo, hi = _band(t, L, n, first[b], rest[b], lo, hi)
            if _gather(scores[b, t], lab[lo:], e[lo:], hi - lo):
                bad[b] = t
                break
            if t == 0:
                prev[lo + 2:hi + 2] = e[lo:hi]  # prev[2 + j] holds state j
            else:
                _max_step(prev, cur, lp, w1, w2, e, lo, hi)
                if whole:
                    _argmax_step(prev, lp, w1, w2, bp[t], lo, hi)
                prev, cur = cur, prev
            if not whole and t % K == 0 and t < L - 1:
                kept[t // K, :] = prev
        if bad[b] >= 0:
            continue
        f = _final_state(prev, n)
        best[b] = prev[f + 2]
        if whole:
            for t in range(L - 1, 0, -1):
                states[b, t] = f
                f -= bp[t, f]
        for s in range(-1 if whole else (L - 2) // K, -1, -1):
            t0, t1 = s * K, min((s + 1) * K, L - 1)  # recompute frames t0 + 1 .. t1
            prev[:] = kept[s]
            cur[:] = _NEG_INF
            lo, hi = _band(t0, L, n, first[b], rest[b], 0, 0)
            for t in range(t0 + 1, t1 + 1):
                lo, hi = _band(t, L, n, first[b], rest[b], lo, hi)
                _gather(scores[b, t], lab[lo:], e[lo:], hi - lo)
                _max_step(prev, cur, lp, w1, w2, e, lo, hi)
                _argmax_step(prev, lp, w1, w2, bp[t - t0 - 1], lo, hi)
                prev, cur = cur, prev
            for t in range(t1, t0, -1):
                states[b, t] = f
                f -= bp[t - t0 - 1, f]
        states[b, 0] = f


def _forward(scores, lengths, nstates, labels, loop, fwd, skip, first, rest, need, offsets, alpha, totals, bad):
    """Log-space forward algorithm over the band; keeps the forward variables for the backward.

    Args:
      scores, lengths, nstates, labels, loop, fwd, skip, first, rest, need, bad: as :func:`_viterbi`.
      offsets: (B,) int64, where utterance b's block of lengths[b] x (nstates[b] + 2) starts.
      alpha: (A,) float64 out, the forward variables: per frame two -inf guards, then the states
        (only those of the band and two on either side of it are written).
      totals: (B,) float64 out, -inf beforehand: log-sum over paths (-inf where no path exists).
    """
    for b in numba.prange(scores.shape[0]):
        L, n, base = lengths[b], nstates[b], offsets[b]
        if L < need[b]:
            continue
        lab, lp = labels[b], loop[b]
        w1, w2, _ = _moves(n, loop[b], fwd[b], skip[b])
        e = np.empty(n)
        lo, hi = 0, 0
        for t in range(L):
            lo, hi = _band(t, L, n, first[b], rest[b], lo, hi)
            if _gather(scores[b, t], lab[lo:], e[lo:], hi - lo):
                bad[b] = t
                break
            cur = alpha[base + t * (n + 2):base + (t + 1) * (n + 2)]
            cur[lo:lo + 2] = _NEG_INF  # states lo-2, lo-1 (cur[2 + j] holds state j)
            cur[hi + 2:hi + 4] = _NEG_INF  # states hi, hi+1: what the next frame may read
            if t == 0:
                cur[lo + 2:hi + 2] = e[lo:hi]
                continue
            prev = alpha[base + (t - 1) * (n + 2):]
            p0, p1, p2, c = prev[lo + 2:], prev[lo + 1:], prev[lo:], cur[lo + 2:]
            lpj, w1j, w2j, ej = lp[lo:], w1[lo:], w2[lo:], e[lo:]
            for i in range(hi - lo):
                c[i] = _lse3(p0[i] + lpj[i], p1[i] + w1j[i], p2[i] + w2j[i]) + ej[i]
        if bad[b] >= 0:
            continue
        last = alpha[base + (L - 1) * (n + 2) + 2:]
        totals[b] = last[0] if n == 1 else _lse3(last[n - 1], last[n - 2], _NEG_INF)


def _backward(scores, lengths, nstates, labels, loop, fwd, skip, first, rest, need, offsets, alpha, totals,
              gscale, grad):
    """Backward algorithm over the band: adds ``gscale[b]`` x the state occupancies into ``grad``.

    Args:
      scores, ..., totals: as :func:`_forward` (after it ran; utterances with ``totals[b] == -inf``
        are left out).
      gscale: (B,) float64, the gradient of the loss w.r.t. each total.
      grad: (B, T, C) out, zero beforehand, dtype of scores.
    """
    for b in numba.prange(scores.shape[0]):
        tot, g = totals[b], gscale[b]
        if tot == _NEG_INF or g == 0.0:
            continue
        L, n, base = lengths[b], nstates[b], offsets[b]
        lab, lp, fw = labels[b], loop[b], fwd[b]
        _, _, u2 = _moves(n, loop[b], fwd[b], skip[b])
        u1 = np.full(n, _NEG_INF)
        u1[:n - 1] = fw[:n - 1]
        beta, eb, occ, e = np.full(n, _NEG_INF), np.full(n + 2, _NEG_INF), np.empty(n), np.empty(n)
        lo, hi = _band(L - 1, L, n, first[b], rest[b], 0, 0)
        beta[max(n - 2, 0):] = 0.0
        for t in range(L - 1, -1, -1):
            aj, bj, oj = alpha[base + t * (n + 2) + 2 + lo:], beta[lo:], occ[lo:]
            for i in range(hi - lo):  # occupancies of the band
                oj[i] = g * _exp(aj[i] + bj[i] - tot)
            grow = grad[b, t]
            for j in range(lo, hi):
                grow[lab[j]] += occ[j]
            if t == 0:
                break
            _gather(scores[b, t], lab[lo:], e[lo:], hi - lo)
            ebj, ej = eb[lo:], e[lo:]
            for i in range(hi - lo):
                ebj[i] = ej[i] + bj[i]
            eb[hi:hi + 2] = _NEG_INF  # below lo: never written
            lo, hi = _band(t - 1, L, n, first[b], rest[b], lo, hi)
            ebj, eb1, eb2, lpj, u1j, u2j, bj = eb[lo:], eb[lo + 1:], eb[lo + 2:], lp[lo:], u1[lo:], u2[lo:], beta[lo:]
            for i in range(hi - lo):
                bj[i] = _lse3(lpj[i] + ebj[i], u1j[i] + eb1[i], u2j[i] + eb2[i])


_PY = {"viterbi": _viterbi, "forward": _forward, "backward": _backward}
_KERNELS = {}


def _signature(kind: str, dtype):
    """The one signature compiled per (kernel, scores dtype): scores and grad of any strides."""
    i64, f64 = numba.int64[::1], numba.float64[::1]
    i2, f2 = numba.int64[:, ::1], numba.float64[:, ::1]
    tables = (i64, i64, i2, f2, f2, numba.boolean[:, ::1], i2, i2, i64)
    extra = {"viterbi": (numba.int64, f64, i2, i64),
             "forward": (i64, f64, f64, i64),
             "backward": (i64, f64, f64, f64, dtype[:, :, :])}[kind]
    return numba.void(dtype[:, :, :], *tables, *extra)


def _kernel(kind: str, scores: np.ndarray):
    """The compiled kernel for the dtype of ``scores`` (compiled, or loaded from the cache, on first use)."""
    key = (kind, scores.dtype.char)
    if key not in _KERNELS:
        dtype = numba.float32 if scores.dtype == np.float32 else numba.float64
        _KERNELS[key] = numba.njit([_signature(kind, dtype)], parallel=True, **_OPTS)(_PY[kind])
    return _KERNELS[key]


def state_block(nstates: int) -> int:
    """Forward variables stored per frame for a chain of ``nstates`` states (two guards)."""
    return nstates + 2


def _run(name: str, threads: int, arrays) -> None:
    # starting numba's OpenMP pool changes the OpenMP thread count torch's intra-op pool reads too
    # (measured: 1 -> NUMBA_NUM_THREADS): without the restore a process that asked torch for one
    # thread runs on all cores after its first chain call, and its float sums change with it
    torch_threads = torch.get_num_threads()
    try:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        _kernel(name, arrays[0])(*arrays)
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


def viterbi(threads: int, *arrays) -> None:
    """Runs :func:`_viterbi` keeping every backpointer (segment 0) on ``threads`` numba threads.

    ``arrays``: the arguments of :func:`_viterbi` without ``segment``.
    """
    _run("viterbi", threads, (*arrays[:10], 0, *arrays[10:]))


def viterbi_checkpointed(threads: int, *arrays) -> None:
    """Runs :func:`_viterbi` with the checkpointed backtrace (``arrays`` with ``segment`` >= 1)."""
    _run("viterbi", threads, arrays)


def forward(threads: int, *arrays) -> None:
    """Runs :func:`_forward` on ``threads`` numba threads."""
    _run("forward", threads, arrays)


def backward(threads: int, *arrays) -> None:
    """Runs :func:`_backward` on ``threads`` numba threads."""
    _run("backward", threads, arrays)
