"""Deterministic batch and shard planning for aligning a corpus.

:func:`plan_batches` splits a cut manifest into deterministic batches: windows of ``window``
consecutive cuts, each sorted by duration and cut into batches of at most ``max_duration``
seconds by lhotse's ``SimpleCutSampler``; a shard ``i/n`` is a contiguous range of windows
(:func:`shard_windows`), so sharded runs compute exactly the batches of an unsharded one and
their outputs concatenate in cut order.
"""
import itertools
import math
import warnings
from typing import Iterable, Iterator, Optional, Tuple

from lhotse import CutSet
from lhotse.cut import Cut

from fsalign.corpus.cuts import SimpleSampler
from fsalign.errors import FsalignError
from fsalign.util import Seconds

__all__ = ["parse_shard", "shard_range", "shard_windows", "plan_batches"]


def parse_shard(spec: str) -> Tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; raises FsalignError otherwise."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise FsalignError(f"shard must be 'i/n' with integers 0 <= i < n, got {spec!r}") from None
    if not 0 <= i < n:
        raise FsalignError(f"shard must be 'i/n' with integers 0 <= i < n, got {spec!r}")
    return i, n


def shard_range(num_cuts: int, window: int, shard: Tuple[int, int]) -> Tuple[int, int]:
    """Cut indices ``[lo, hi)`` of shard ``(i, n)``.

    The shard gets windows ``[i K / n, (i+1) K / n)`` of the ``K = ceil(num_cuts / window)`` windows
    (integer division).
    """
    i, n = shard
    windows = -(-num_cuts // window)
    return min(num_cuts, i * windows // n * window), min(num_cuts, (i + 1) * windows // n * window)


def shard_windows(cuts: Iterable[Cut], window: int, shard: Tuple[int, int] = (0, 1),
                  num_cuts: Optional[int] = None) -> Iterator[CutSet]:
    """The windows of ``window`` consecutive cuts that belong to ``shard``, in manifest order.

    Shard ``i/n`` gets the cuts of :func:`shard_range`: the shards partition the manifest
    into contiguous ranges of whole windows.

    Args:
      cuts: the manifest (iterated once, lazily).
      window: cuts per window (>= 1).
      shard: ``(i, n)``.
      num_cuts: number of cuts in ``cuts``; needed when ``n > 1``.

    Returns:
      Iterator of eager CutSets.
    """
    if window < 1:
        raise FsalignError(f"window must be >= 1 cut, got {window}")
    lo, hi = 0, math.inf
    if shard[1] > 1:
        if num_cuts is None:
            raise FsalignError("shard_windows needs num_cuts to split into shards")
        lo, hi = shard_range(num_cuts, window, shard)
    it = iter(cuts)
    for start in itertools.count(0, window):
        if start >= hi:
            return
        chunk = list(itertools.islice(it, window))
        if not chunk:
            return
        if start >= lo:
            yield CutSet.from_cuts(chunk)


def plan_batches(windows: Iterable[CutSet], max_duration: Seconds,
                 long_s: Seconds = math.inf) -> Iterator[CutSet]:
    """Batches of every window, longest cuts first.

    Each window's cuts are sorted by decreasing duration (ties by id); a long recording (longer
    than ``long_s``) is a batch of its own, the others are cut by lhotse's ``SimpleCutSampler``
    into batches of at most ``max_duration`` seconds (a longer cut is a batch of its own);
    ``max_duration=0``: every cut its own batch.
    """
    if not max_duration >= 0:
        raise FsalignError(f"batch duration must be >= 0 seconds, got {max_duration}")
    for cuts in windows:
        ordered = sorted(cuts, key=lambda c: (-c.duration, c.id))
        yield from (CutSet.from_cuts([cut]) for cut in ordered if cut.duration > long_s)
        ordered = CutSet.from_cuts([cut for cut in ordered if not cut.duration > long_s])
        if not len(ordered):
            continue
        if max_duration == 0:
            yield from (CutSet.from_cuts([cut]) for cut in ordered)
            continue
        sampler = SimpleSampler(ordered, max_duration=max_duration, shuffle=False, drop_last=False,
                                    rank=0, world_size=1)
        with warnings.catch_warnings():  # "a cut exceeds max_duration": it is batched alone, as wanted
            warnings.simplefilter("ignore")
            yield from sampler
