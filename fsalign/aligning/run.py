"""One alignment run: read the manifest, align what the journal lacks, render the output.

:func:`align_to_output` is the library function behind ``fsalign align``: it aligns the cuts
of a shard batch by batch into the :class:`~fsalign.aligning.journal.Journal`, then writes
``OUT.failed.tsv`` and renders the output from the journal (:mod:`fsalign.aligning.output`).
"""
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from fsalign.aligning.aligner import align_cuts
from fsalign.aligning.batches import shard_range
from fsalign.aligning.journal import Journal
from fsalign.aligning.output import failed_path, render, write_failed
from fsalign.errors import FsalignError
from fsalign.util import Seconds

__all__ = ["RunSummary", "read_cut_ids", "align_to_output"]


def read_cut_ids(path: Path):
    """Opens a cut manifest and reads its cut ids.

    Returns:
      (the CutSet, read lazily; all cut ids in manifest order).

    Raises:
      FsalignError: the manifest is missing, unreadable or empty, or an id repeats.
    """
    from lhotse import CutSet
    from lhotse.cut import Cut

    if not path.exists():
        raise FsalignError(f"cuts {path} do not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise FsalignError(f"cuts {path} is an empty file (no cuts)")
    try:
        cuts = CutSet.from_file(path)
        items = iter(cuts)
        first = next(items, None)
    except Exception as e:
        raise FsalignError(f"cannot read cuts {path}: {type(e).__name__}: {e}") from None
    if first is not None and not isinstance(first, Cut):
        raise FsalignError(f"{path} is a manifest of {type(first).__name__}s, not of cuts: make cuts with "
                           f"lhotse's CutSet.from_manifests(recordings, supervisions)")
    try:
        ids = [] if first is None else [first.id] + [cut.id for cut in items]
    except Exception as e:
        raise FsalignError(_manifest_error(path, e)) from None
    if not ids:
        raise FsalignError(f"cuts {path} hold no cuts")
    seen = set()
    for cut_id in ids:
        if cut_id in seen:
            raise FsalignError(f"cuts {path}: cut id {cut_id} appears more than once (ids must be unique)")
        seen.add(cut_id)
    return cuts, ids


def _manifest_error(path: Path, error: Exception) -> str:
    """A one-line reason, with the manifest line that does not parse when that is the problem."""
    import gzip
    import json

    if isinstance(error, ValueError):
        opener = gzip.open if path.name.endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    try:
                        json.loads(line)
                    except ValueError as e:
                        return f"{path}:{number}: not a JSON line ({e.msg})"
        except OSError:
            pass
    return f"cannot read cuts {path}: {type(error).__name__}: {error}"


@dataclass
class RunSummary:
    """What :func:`align_to_output` wrote.

    Attributes:
      utterances: cut ids of the shard, in manifest order.
      aligned: how many of them were aligned.
      aligned_s: seconds of audio aligned.
      failed: ``[cut id, reason]`` of the others, in manifest order.
      failed_path: ``OUT.failed.tsv`` (exists only if ``failed``).
      mean_confidence: the mean confidence of the aligned words (:mod:`fsalign.results.confidence`);
        None if no word has one.
      low_confidence: how many aligned words have a confidence below
        :data:`~fsalign.results.confidence.LOW_CONFIDENCE`.
    """

    utterances: List[str]
    aligned: int
    aligned_s: Seconds
    failed: List[List[str]]
    failed_path: Path
    mean_confidence: Optional[float] = None
    low_confidence: int = 0


def _tally(ids: List[str], journal: Journal):
    """(utterances aligned, seconds of audio aligned, [cut id, reason] of the failed ones)."""
    aligned, audio, failed = 0, 0.0, []
    for cut_id in ids:
        duration, error = journal.outcomes[cut_id]
        if error is None:
            aligned += 1
            audio += duration
        else:
            failed.append([cut_id, error])
    return aligned, audio, failed


def align_to_output(aligner, cuts, cut_ids: List[str], journal: Journal, output: Path, kind: str,
                    level: str = "word", batch_duration: Seconds = 100.0, window: int = 1000,
                    shard: Tuple[int, int] = (0, 1), num_workers: int = 0, progress: bool = True) -> RunSummary:
    """Aligns the cuts of ``shard`` that ``journal`` lacks, then writes ``output`` from the journal.

    Results are journaled batch by batch (:func:`fsalign.aligning.aligner.align_cuts`); at the end
    ``OUT.failed.tsv`` is written (or a stale one removed), the output is rendered if any
    utterance was aligned (or the shard is empty), and the journal is deleted. The journal
    is closed whatever happens.

    Args:
      aligner: the :class:`~fsalign.aligning.aligner.Aligner`.
      cuts: the manifest, as from :func:`read_cut_ids`.
      cut_ids: all its cut ids, in order (:func:`read_cut_ids`).
      journal: the open journal of ``output`` (:class:`Journal` at :func:`fsalign.aligning.output.journal_path`).
      output: the final path.
      kind: the output kind of ``output`` (:func:`fsalign.aligning.output.output_kind`).
      level: CTM level, "word" or "token".
      batch_duration: seconds of audio per batch (0: one cut per batch).
      window: cuts sorted and batched together; a shard is a whole number of windows.
      shard: ``(i, n)``.
      num_workers: DataLoader workers loading features.
      progress: show a tqdm bar (utterances, real-time factor).

    Returns:
      A :class:`RunSummary`.
    """
    from tqdm import tqdm

    lo, hi = shard_range(len(cut_ids), window, shard)
    ids = cut_ids[lo:hi]
    try:
        done = set(journal.offsets)
        bar = tqdm(total=len(ids), initial=sum(1 for x in ids if x in done), unit="utt", desc="align",
                   disable=not progress, dynamic_ncols=True)
        audio, start = 0.0, time.perf_counter()
        for results in align_cuts(aligner, cuts, batch_duration, window, shard, len(cut_ids), done, num_workers):
            journal.append(results)
            audio += sum(r.duration for r in results)
            bar.update(len(results))
            if audio > 0:
                bar.set_postfix_str(f"RTF {(time.perf_counter() - start) / audio:.3f}")
        bar.close()
        missing = [x for x in ids if x not in journal.offsets]
        if missing:
            raise RuntimeError(f"{len(missing)} cuts were not aligned, e.g. {missing[:3]}")
        aligned, aligned_s, failed = _tally(ids, journal)
        total, words, low = (sum(x) for x in zip(*[journal.confidences[x] for x in ids])) if ids else (0.0, 0, 0)
        listed = failed_path(output)
        write_failed(listed, failed)
        if aligned or not ids:
            cut_iter = itertools.islice(cuts, lo, hi) if kind == "cuts" else None
            render(kind, output, (journal.get(x) for x in ids), cut_iter, level)
        journal.close()
        journal.path.unlink()
    finally:
        if not journal.file.closed:
            journal.close()
    return RunSummary(ids, aligned, aligned_s, failed, listed, total / words if words else None, low)
