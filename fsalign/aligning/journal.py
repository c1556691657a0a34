"""The journal of a resumable corpus alignment: finished utterances, durably, one line each.

Nothing is lost:

* every batch's results are appended to a :class:`Journal` ``OUT.journal.jsonl`` (a header
  line with the settings, then one complete JSON line per utterance: its spans as
  ``[label, start, end]`` or ``[label, start, end, confidence]``, floats that JSON gives back
  exactly), flushed and fsynced per batch; a torn last line from a kill is cut off when the
  journal is reopened; a journal of other settings or of another version is refused, and so is a
  second writer);
* re-running the same command continues with the utterances the journal lacks; batches are
  a deterministic function of the manifest and the options (:func:`fsalign.aligning.batches.plan_batches`),
  so resumed results equal uninterrupted ones;
* at the end :func:`fsalign.aligning.run.align_to_output` writes ``OUT.failed.tsv`` and renders
  the output from the journal (:mod:`fsalign.aligning.output`: atomic, in the cuts' order), then
  removes the journal.

lhotse, tqdm and the aligner are imported on first use, so ``fsalign align --help`` starts quickly.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from fsalign.errors import FsalignError
from fsalign.results.confidence import LOW_CONFIDENCE
from fsalign.results.times import MismatchTimes, SkippedWord, TimedSpan, UtteranceTimes
from fsalign.util import Seconds

__all__ = ["AlignResult", "Journal", "journal_header"]

_JOURNAL_VERSION = 2  # 2: spans carry their confidence; a journal of 1 lacks it and is refused


@dataclass
class AlignResult:
    """The outcome for one cut: what the journal records.

    Attributes:
      cut_id: the cut.
      duration: its duration in seconds.
      times: word and token times, or None if it failed.
      error: why it failed ("<kind>: <detail>"), or None.
    """

    cut_id: str
    duration: Seconds
    times: Optional[UtteranceTimes] = None
    error: Optional[str] = None



def _spans(spans: List[TimedSpan]) -> list:
    """``[label, start, end]`` per span, ``[label, start, end, score]`` where the score is known."""
    return [[s.label, s.start, s.end] + ([] if s.score is None else [s.score]) for s in spans]


def _file_id(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def journal_header(checkpoint: Path, cuts: Path, shard: Tuple[int, int], window: int, batch_duration: Seconds,
                   settings: dict) -> dict:
    """The settings a journal records.

    Which checkpoint and cuts (path, size, mtime), the shard and batching, and ``settings``
    (:meth:`fsalign.aligning.aligner.Aligner.settings`).
    """
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
        # cut id -> (sum of its word confidences, words with one, words below LOW_CONFIDENCE)
        self.confidences: Dict[str, Tuple[float, int, int]] = {}
        header = json.loads(json.dumps({"fsalign_align_journal": _JOURNAL_VERSION, **header}))
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a+b")
        self._lock()  # before discarding anything: a journal in use is never touched
        if restart:
            self.file.truncate(0)
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
        scores = [w[3] for w in entry.get("words", []) if len(w) > 3]
        self.confidences[entry["id"]] = (sum(scores), len(scores), sum(c < LOW_CONFIDENCE for c in scores))

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
        """Records :class:`AlignResult` s (one JSON line each), durably."""
        entries = []
        for r in results:
            entry = {"id": r.cut_id, "duration": r.duration}
            if r.times is None:
                entry["error"] = r.error
            else:
                entry["words"] = _spans(r.times.words)
                entry["tokens"] = _spans(r.times.tokens)
                if r.times.written:
                    entry["written"] = _spans(r.times.written)
                if r.times.mismatch is not None:
                    entry["mismatch"] = {
                        "skipped": [[w.label, w.index, w.at] for w in r.times.mismatch.skipped],
                        "untranscribed": _spans(r.times.mismatch.untranscribed)}
            entries.append(entry)
        for entry, offset in zip(entries, self._write(entries)):
            self._record(entry, offset)

    def get(self, cut_id: str):
        """The recorded :class:`AlignResult` of ``cut_id``."""
        self.file.seek(self.offsets[cut_id])
        entry = json.loads(self.file.readline())
        if "error" in entry:
            return AlignResult(cut_id, entry["duration"], error=entry["error"])
        words = [TimedSpan(*s) for s in entry["words"]]
        tokens = [TimedSpan(*s) for s in entry["tokens"]]
        written = [TimedSpan(*s) for s in entry.get("written", [])]
        mismatch = entry.get("mismatch")
        if mismatch is not None:
            mismatch = MismatchTimes([SkippedWord(*w) for w in mismatch["skipped"]],
                                     [TimedSpan(*s) for s in mismatch["untranscribed"]])
        return AlignResult(cut_id, entry["duration"], UtteranceTimes(cut_id, entry["duration"], words, tokens,
                                                                     written=written, mismatch=mismatch))

    def close(self) -> None:
        """Close the journal file."""
        self.file.close()
