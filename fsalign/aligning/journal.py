"""Resumable corpus alignment: the journal of finished utterances, and the run that fills it.

Nothing is lost:

* every batch's results are appended to a :class:`Journal` ``OUT.journal.jsonl`` (a header
  line with the settings, then one complete JSON line per utterance, flushed and fsynced per
  batch; a torn last line from a kill is cut off when the journal is reopened; a journal of
  other settings is refused, and so is a second writer);
* re-running the same command continues with the utterances the journal lacks; batches are
  a deterministic function of the manifest and the options (:func:`fsalign.aligning.aligner.plan_batches`),
  so resumed results equal uninterrupted ones;
* at the end :func:`align_to_output` writes ``OUT.failed.tsv`` and renders the output from the
  journal (:mod:`fsalign.aligning.output`: atomic, in the cuts' order), then removes the journal.

lhotse, tqdm and the aligner are imported on first use, so ``fsalign align --help`` starts quickly.
"""
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from fsalign.aligning.output import failed_path, render, write_failed
from fsalign.errors import FsalignError
from fsalign.util import Seconds

__all__ = ["Journal", "RunSummary", "journal_header", "read_cut_ids", "align_to_output"]

_JOURNAL_VERSION = 1


def _file_id(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def journal_header(checkpoint: Path, cuts: Path, shard: Tuple[int, int], window: int, batch_duration: Seconds,
                   settings: dict) -> dict:
    """The settings a journal records: which checkpoint and cuts (path, size, mtime), the
    shard and batching, and ``settings`` (:meth:`fsalign.aligning.aligner.Aligner.settings`)."""
    return {"checkpoint": _file_id(checkpoint), "cuts": _file_id(cuts), "shard": list(shard), "window": window,
            "batch_duration": batch_duration, **settings}


class Journal:
    """Append-only record of finished utterances (see the module docstring).

    Args:
      path: the journal file.
      header: the settings; an existing journal with other settings is refused.
      restart: discard an existing journal instead.
    """

    def __init__(self, path: Path, header: dict, restart: bool = False):
        self.path = path
        self.offsets: Dict[str, int] = {}  # cut id -> byte offset of its line
        self.outcomes: Dict[str, Tuple[Seconds, Optional[str]]] = {}  # cut id -> (duration, error or None)
        header = json.loads(json.dumps({"fsalign_align_journal": _JOURNAL_VERSION, **header}))
        if restart and path.exists():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a+b")
        self._lock()
        self.file.seek(0)
        end, found = 0, None
        for line in self.file:
            if not line.endswith(b"\n"):
                break  # a torn last line from a kill: cut off below
            try:
                entry = json.loads(line)
            except ValueError:
                self.file.close()
                raise FsalignError(f"journal {path}: line at byte {end} is not JSON; delete the file to start over")
            if found is None:
                found = entry
                if found != header:
                    self.file.close()
                    raise FsalignError(
                        f"journal {path} was written by a run with other settings or inputs; re-run that "
                        f"command to finish it, or pass --restart (or delete it) to start over")
            else:
                self._record(entry, end)
            end += len(line)
        self.file.truncate(end)
        if found is None:
            self._write([header])

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.close()
            raise FsalignError(f"{self.path} is in use by another fsalign align writing the same output") from None

    def _record(self, entry: dict, offset: int) -> None:
        self.offsets[entry["id"]] = offset
        self.outcomes[entry["id"]] = (entry["duration"], entry.get("error"))

    def _write(self, entries: List[dict]) -> List[int]:
        self.file.seek(0, os.SEEK_END)
        offsets = []
        for entry in entries:
            offsets.append(self.file.tell())
            self.file.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        return offsets

    def append(self, results) -> None:
        """Records :class:`~fsalign.aligning.aligner.AlignResult` s (one JSON line each), durably."""
        entries = []
        for r in results:
            entry = {"id": r.cut_id, "duration": r.duration}
            if r.times is None:
                entry["error"] = r.error
            else:
                entry["words"] = [[s.label, s.start, s.end] for s in r.times.words]
                entry["tokens"] = [[s.label, s.start, s.end] for s in r.times.tokens]
            entries.append(entry)
        for entry, offset in zip(entries, self._write(entries)):
            self._record(entry, offset)

    def get(self, cut_id: str):
        """The recorded :class:`~fsalign.aligning.aligner.AlignResult` of ``cut_id``."""
        from fsalign.aligning.aligner import AlignResult
        from fsalign.results.formats import TimedSpan, UtteranceTimes

        self.file.seek(self.offsets[cut_id])
        entry = json.loads(self.file.readline())
        if "error" in entry:
            return AlignResult(cut_id, entry["duration"], error=entry["error"])
        words = [TimedSpan(*s) for s in entry["words"]]
        tokens = [TimedSpan(*s) for s in entry["tokens"]]
        return AlignResult(cut_id, entry["duration"], UtteranceTimes(cut_id, entry["duration"], words, tokens))

    def close(self) -> None:
        self.file.close()


def read_cut_ids(path: Path):
    """Opens a cut manifest and reads its cut ids.

    Returns:
      (the CutSet, read lazily; all cut ids in manifest order).

    Raises:
      FsalignError: the manifest is missing, unreadable or empty, or an id repeats.
    """
    from lhotse import CutSet

    if not path.exists():
        raise FsalignError(f"cuts {path} do not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise FsalignError(f"cuts {path} is an empty file (no cuts)")
    try:
        cuts = CutSet.from_file(path)
        ids = [cut.id for cut in cuts]
    except Exception as e:
        raise FsalignError(f"cannot read cuts {path}: {type(e).__name__}: {e}") from None
    if not ids:
        raise FsalignError(f"cuts {path} hold no cuts")
    seen = set()
    for cut_id in ids:
        if cut_id in seen:
            raise FsalignError(f"cuts {path}: cut id {cut_id} appears more than once (ids must be unique)")
        seen.add(cut_id)
    return cuts, ids


@dataclass
class RunSummary:
    """What :func:`align_to_output` wrote.

    Attributes:
      utterances: cut ids of the shard, in manifest order.
      aligned: how many of them were aligned.
      aligned_s: seconds of audio aligned.
      failed: ``[cut id, reason]`` of the others, in manifest order.
      failed_path: ``OUT.failed.tsv`` (exists only if ``failed``).
    """

    utterances: List[str]
    aligned: int
    aligned_s: Seconds
    failed: List[List[str]]
    failed_path: Path


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
      output: the final path; ``kind`` its :func:`fsalign.aligning.output.output_kind`.
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

    from fsalign.aligning.aligner import align_cuts, shard_range

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
    return RunSummary(ids, aligned, aligned_s, failed, listed)
