"""Exact batched Viterbi and full sum over chain graphs, the shape of every built-in topology.

Dimension symbols used in this module:
  B: utterances in a batch
  T: frames (the longest utterance)
  C: score-matrix columns
  N: states of the longest chain

A chain is, per utterance, a sequence of states j = 0..n-1, each emitting one score-matrix
column ``labels[j]``. Moves between consecutive frames: j -> j (loop, scores ``loop[j]``),
j -> j+1 and, where ``skip[j]``, j -> j+2 (both score ``fwd[j]``). Paths start in {0, 1} and
end in {n-1, n-2} (only state 0 when n == 1); the first frame has no transition term and
entering the final state costs nothing. A path's score is the sum of ``scores[b, t, labels[j_t]]``
over its frames plus its transition terms (the path score of DESIGN.md once the caller has
applied α and β to the score matrix; γ is in ``loop`` and ``fwd``). CTC, relaxed CTC and HMM
graphs are such chains (:func:`chain_from_topology`); the kernels need no k2.

Both kernels read the score matrix in place, no copy and no pass over the whole matrix: at frame
t of an utterance they read ``scores[b, t, labels[j]]`` for the states j some path can occupy
then (the band ``first_frame[j] <= t`` and ``min_rest[j] <= L - t``), and check exactly those for
NaN/inf; padding frames, unused columns and utterances too short for their chain are never read.
Sums are accumulated in float64 whatever the dtype of the scores.

Viterbi tie rule: of predecessors with equal scores the one with the highest state index wins
(the loop before j-1 before j-2; the final state n-1 before n-2): among best paths, the one
that is largest when compared from its last frame backwards, i.e. that moves on as early as it
can.

Memory: the ordinary Viterbi keeps a backpointer for every frame and state, B x T x N bytes
(about 12 B x T x N for the torch implementation, which also gathers the emissions of all frames).
Past ``memory_budget`` bytes (:data:`VITERBI_MEMORY_BUDGET` by default) :func:`chain_viterbi`
takes the checkpointed backtrace instead: the forward pass keeps the scores of every K-th frame
only, and the backtrace recomputes the backpointers of one segment of K frames at a time from
them (K about sqrt(8T)), in O((T / K + K) x N) memory for twice the computation. Its paths and
scores are those of the ordinary kernel, bit for bit (the same float64 arithmetic, the same tie
rule). An hour at 40 ms (T = 90,000) with 80,000 states needs 7.2 GB of backpointers; the
checkpointed backtrace about 130 MB.

Implementations: ``"numba"`` (CPU kernels of :mod:`fsalign.engine.chain_numba`, parallel over
the batch on ``torch.get_num_threads()`` threads, compiled on first use and cached on disk) and
``"torch"`` (:mod:`fsalign.engine.chain_torch`, vectorised over (B, N) per frame, any device);
``"auto"`` takes numba for CPU tensors and torch elsewhere. Both give the same paths and the
same totals and gradients up to rounding.
"""
import logging
import math
from typing import Optional, Tuple

import torch

from fsalign.engine.builtin import CtcTopology, HmmTopology
from fsalign.engine.chain_build import Chain, chain_from_topology
from fsalign.engine.topology import TrainingGraphs
from fsalign.errors import FsalignError

__all__ = ["ENGINES", "VITERBI_MEMORY_BUDGET", "Chain", "chain_from_topology", "chain_viterbi", "chain_full_sum",
           "path_labels", "resolve_engine", "graphs_chain"]

ENGINES = ("auto", "chain", "k2")
"""Which engine sums and aligns: the exact chain kernels (built-in topologies), k2 (any topology),
or ``auto``: the chain kernels where the topology is a chain, k2 otherwise."""

VITERBI_MEMORY_BUDGET = 1 << 30
"""Bytes the backpointers of :func:`chain_viterbi` may take before it checkpoints (1 GiB)."""

log = logging.getLogger(__name__)
_IMPLEMENTATIONS = ("auto", "numba", "torch")
_NEG_INF = float("-inf")


def resolve_engine(graphs: TrainingGraphs, engine: str = "auto") -> str:
    """``"chain"`` or ``"k2"``: what :data:`ENGINES` ``engine`` means for these graphs.

    Raises:
      FsalignError: an unknown engine, or ``"chain"`` for a topology that is not a built-in chain.
    """
    if engine not in ENGINES:
        raise FsalignError(f"engine must be one of {ENGINES}, got {engine!r}")
    # (graphs of the wrong type are refused by the input checks that follow)
    chain = isinstance(graphs, TrainingGraphs) and isinstance(graphs.topology, (CtcTopology, HmmTopology))
    if engine == "chain" and not chain:
        raise FsalignError(f"the chain engine needs a CTC, relaxed or HMM topology, got {graphs.topology!r}")
    return "chain" if (chain and engine != "k2") else "k2"


def graphs_chain(graphs: TrainingGraphs, transition_scale: float, device) -> Chain:
    """The chains of built-in training graphs with transitions scaled by γ (built once per γ and device)."""
    key = ("chain", float(transition_scale), str(device))
    if key not in graphs.cache:
        graphs.cache[key] = chain_from_topology(graphs.topology, graphs.transcripts, transition_scale, device,
                                                  validate=False)
    return graphs.cache[key]


def path_labels(states: torch.Tensor, chain: Chain) -> torch.Tensor:
    """Column of every frame of a state path.

    Args:
      states: LongTensor (B, T) from :func:`chain_viterbi` (-1 at padding frames).
      chain: the chains it was computed on.

    Returns:
      LongTensor (B, T): ``chain.labels[b, states[b, t]]``, -1 where ``states`` is -1.
    """
    labels = chain.to(states.device).labels.gather(1, states.clamp(min=0))
    return torch.where(states >= 0, labels, torch.full_like(labels, -1))


def chain_viterbi(scores: torch.Tensor, lengths, chain: Chain, implementation: str = "auto",
                  memory_budget: Optional[int] = None,
                  segment_frames: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Best path of every utterance (max over paths), with the tie rule of the module docstring.

    Args:
      scores: Tensor (B, T, C), floating point, any strides (read in place).
      lengths: Tensor or sequence (B,), valid frames per utterance, 1..T, any order.
      chain: Chain with B chains whose labels are < C.
      implementation: "auto", "numba" (CPU only) or "torch".
      memory_budget: bytes the backpointers may take (None: :data:`VITERBI_MEMORY_BUDGET`); past
        it the checkpointed backtrace of the module docstring runs (same result).
      segment_frames: K of the checkpointed backtrace; given, it runs whatever the budget
        (None: about sqrt(8T), what needs the least memory).

    Returns:
      (best, states): float64 Tensor (B,) of best-path scores (-inf where the utterance is
      shorter than its chain needs) and LongTensor (B, T) of the state of every frame (-1 at
      padding frames and for infeasible utterances), both on the device of ``scores``.

    Raises:
      FsalignError: malformed inputs, or NaN/inf among the entries read (naming the first
        utterance and frame).
    """
    lengths, impl = _check(scores, lengths, chain, implementation)
    B, T, _ = scores.shape
    segment = _segment(B, T, chain.labels.shape[1], impl, memory_budget, segment_frames)
    scores = scores.detach()
    if impl == "numba":
        from fsalign.engine import chain_numba

        arrays = _numba_arrays(scores, lengths, chain)
        best = torch.full((B,), _NEG_INF, dtype=torch.float64)
        states = torch.full((B, T), -1, dtype=torch.int64)
        bad = torch.full((B,), -1, dtype=torch.int64)
        out = (best.numpy(), states.numpy(), bad.numpy())
        if segment is None:
            chain_numba.viterbi(torch.get_num_threads(), *arrays, *out)
        else:
            chain_numba.viterbi_checkpointed(torch.get_num_threads(), *arrays, segment, *out)
        _raise_bad(bad)
        return best, states
    from fsalign.engine import chain_torch

    with torch.no_grad():
        best, states, bad = chain_torch.viterbi(scores, lengths.to(scores.device), chain.to(scores.device), segment)
    _raise_bad(bad)
    return best, states


_BYTES_PER_CELL = {"numba": 1, "torch": 12}  # what the ordinary Viterbi keeps per frame and state


def _segment(B: int, T: int, N: int, impl: str, memory_budget: Optional[int],
             segment_frames: Optional[int]) -> Optional[int]:
    """K of the checkpointed backtrace, or None for the ordinary one (module docstring)."""
    if segment_frames is not None:
        if isinstance(segment_frames, bool) or not isinstance(segment_frames, int) or segment_frames < 1:
            raise FsalignError(f"segment_frames must be an integer >= 1, got {segment_frames!r}")
        return segment_frames
    budget = VITERBI_MEMORY_BUDGET if memory_budget is None else memory_budget
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise FsalignError(f"memory_budget must be a number of bytes >= 0, got {budget!r}")
    cell = _BYTES_PER_CELL[impl]
    if B * T * N * cell <= budget:
        return None
    # kept scores (T / K) x N x 8 bytes against K x N x cell bytes of recomputed segment
    return max(1, math.isqrt(8 * T // cell))


def chain_full_sum(scores: torch.Tensor, lengths, chain: Chain, implementation: str = "auto") -> torch.Tensor:
    """Log of the sum over paths of exp(path score); differentiable w.r.t. ``scores``.

    The gradient is the state occupancy (forward-backward) summed by label: ``d total[b] /
    d scores[b, t, c]`` is the posterior probability that frame t is aligned to column c.
    Double backward is not supported.

    Args: as :func:`chain_viterbi`.

    Returns:
      float64 Tensor (B,) on the device of ``scores``: ``-inf`` (and zero gradient) where the
      utterance is shorter than its chain needs.

    Raises:
      FsalignError: as :func:`chain_viterbi`.
    """
    lengths, impl = _check(scores, lengths, chain, implementation)
    return _FullSum.apply(scores, lengths, chain, impl)


def _check(scores, lengths, chain: Chain, implementation: str):
    """Validates the inputs; returns (lengths as CPU int64, the implementation to use)."""
    if implementation not in _IMPLEMENTATIONS:
        raise FsalignError(f"implementation must be one of {_IMPLEMENTATIONS}, got {implementation!r}")
    if not isinstance(scores, torch.Tensor) or scores.ndim != 3 or not scores.is_floating_point():
        what = f"shape {tuple(scores.shape)}, {scores.dtype}" if isinstance(scores, torch.Tensor) else type(scores)
        raise FsalignError(f"scores must be a floating-point Tensor of shape (B, T, C), got {what}")
    if not isinstance(chain, Chain):
        raise FsalignError(f"chain must be a Chain (see chain_from_topology), got {type(chain).__name__}")
    B, T, C = scores.shape
    if len(chain) != B:
        raise FsalignError(f"scores has {B} utterances but the chain has {len(chain)}")
    if B and int(chain.labels.max()) >= C:
        raise FsalignError(f"the chain uses column {int(chain.labels.max())}, but scores has C={C} columns")
    lengths = torch.as_tensor(lengths)
    if lengths.ndim != 1 or lengths.shape[0] != B or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise FsalignError(f"lengths must be integer frame counts of shape ({B},), got "
                           f"{lengths.dtype} of shape {tuple(lengths.shape)}")
    lengths = lengths.to("cpu", torch.int64)
    bad = ((lengths < 1) | (lengths > T)).nonzero().flatten().tolist()
    if bad:
        raise FsalignError(f"lengths must be in 1..T={T}; " +
                           ", ".join(f"utterance {i} has {int(lengths[i])}" for i in bad[:10]))
    impl = implementation
    if impl == "auto":
        impl = "numba" if scores.device.type == "cpu" else "torch"
    if impl == "numba" and scores.device.type != "cpu":
        raise FsalignError(f"the numba implementation runs on CPU tensors, got scores on {scores.device}")
    return lengths, impl


def _raise_bad(first_bad: torch.Tensor) -> None:
    """Raises FsalignError naming utterances whose frame ``first_bad[b] >= 0`` has NaN/inf."""
    first_bad = first_bad.cpu()
    rows = (first_bad >= 0).nonzero().flatten().tolist()
    if rows:
        raise FsalignError("scores contain NaN or inf in valid frames of " + ", ".join(
            f"utterance {b} (first at frame {int(first_bad[b])})" for b in rows[:10]))


def _numba_arrays(scores: torch.Tensor, lengths: torch.Tensor, chain: Chain):
    """NumPy views of the kernel inputs (scores in place unless float16/bfloat16)."""
    if scores.dtype not in (torch.float32, torch.float64):
        log.debug("chain kernels: converting %s scores to float32 (a copy)", scores.dtype)
        scores = scores.float()
    chain = chain.to("cpu")
    tables = (chain.num_states, chain.labels, chain.loop, chain.fwd, chain.skip, chain.first_frame,
              chain.min_rest, chain.min_frames)
    return (scores.numpy(), lengths.contiguous().numpy()) + tuple(x.contiguous().numpy() for x in tables)


class _FullSum(torch.autograd.Function):
    """Forward algorithm in ``forward``, forward-backward occupancies in ``backward``."""

    @staticmethod
    def forward(ctx, scores, lengths, chain, impl):
        data = scores.detach()
        if impl == "numba":
            from fsalign.engine import chain_numba

            arrays = _numba_arrays(data, lengths, chain)
            sizes = lengths * chain_numba.state_block(chain.num_states.cpu())
            offsets = torch.cumsum(sizes, 0) - sizes
            alpha = torch.empty(int(sizes.sum()), dtype=torch.float64)
            totals = torch.full((len(chain),), _NEG_INF, dtype=torch.float64)
            bad = torch.full((len(chain),), -1, dtype=torch.int64)
            chain_numba.forward(torch.get_num_threads(), *arrays, offsets.numpy(), alpha.numpy(),
                                totals.numpy(), bad.numpy())
            _raise_bad(bad)
            ctx.saved = (arrays, offsets, alpha, totals)
        else:
            from fsalign.engine import chain_torch

            with torch.no_grad():
                totals, saved, bad = chain_torch.forward(data, lengths.to(data.device), chain.to(data.device))
            _raise_bad(bad)
            ctx.saved = saved
        ctx.impl = impl
        ctx.save_for_backward(scores)
        return totals.to(scores.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total):
        (scores,) = ctx.saved_tensors
        grad = torch.zeros(scores.shape, dtype=scores.dtype, device=scores.device)
        gscale = grad_total.detach().to(torch.float64)
        if ctx.impl == "numba":
            from fsalign.engine import chain_numba

            arrays, offsets, alpha, totals = ctx.saved
            out = grad if grad.dtype in (torch.float32, torch.float64) else grad.float()
            chain_numba.backward(torch.get_num_threads(), *arrays, offsets.numpy(), alpha.numpy(),
                                 totals.numpy(), gscale.cpu().contiguous().numpy(), out.numpy())
            if out is not grad:
                grad.copy_(out)
        else:
            from fsalign.engine import chain_torch

            chain_torch.backward(grad, gscale, *ctx.saved)
        return grad, None, None, None
