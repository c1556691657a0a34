"""``fsalign align`` and ``fsalign merge``: a corpus of lhotse cuts -> CTM, TextGrids or cuts, safely.

Safety (nothing lost, never a half-written output):

* every batch's results are appended to a journal ``OUT.journal.jsonl`` (a header line with
  the settings, then one complete JSON line per utterance, flushed and fsynced per batch;
  a torn last line from a kill is cut off when the journal is reopened);
* re-running the same command continues with the utterances the journal lacks; batches are
  a deterministic function of the manifest and the options (:func:`fsalign.align.plan_batches`),
  so resumed results equal uninterrupted ones;
* the output is rendered from the journal at the end, in the cuts' order, written to a
  temporary file next to it and moved into place with ``os.replace`` (a TextGrid folder: one
  file at a time, each atomically); then ``OUT.failed.tsv`` (cut id, reason) is written if
  anything failed, and the journal is removed.

Sharding: ``--shard i/n`` aligns a contiguous range of windows of the manifest, so
``fsalign merge`` joins the shard outputs (given in shard order) by concatenation, byte for
byte equal to an unsharded run with the same options.
"""
import gzip
import json
import os
import itertools
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

import click

Pathlike = Union[str, Path]
OUTPUT_KINDS = ("ctm", "textgrid", "cuts")
_JOURNAL_VERSION = 1


def output_kind(path: Pathlike) -> str:
    """"ctm" (``.ctm``), "cuts" (``.jsonl.gz``/``.jsonl``) or "textgrid" (a folder: no suffix or existing)."""
    from fsalign.errors import FsalignError

    path = Path(path)
    name = path.name.lower()
    if name.endswith(".ctm"):
        return "ctm"
    if name.endswith((".jsonl.gz", ".jsonl")):
        return "cuts"
    if path.is_dir() or not path.suffix:
        return "textgrid"
    raise FsalignError(f"output {path}: unknown format (expected .ctm, .jsonl.gz or a folder for TextGrids)")


def _sidecar(output: Pathlike, suffix: str) -> Path:
    return Path(str(output).rstrip("/\\") + suffix)


def journal_path(output: Pathlike) -> Path:
    """``OUT.journal.jsonl``."""
    return _sidecar(output, ".journal.jsonl")


def failed_path(output: Pathlike) -> Path:
    """``OUT.failed.tsv``."""
    return _sidecar(output, ".failed.tsv")


def _file_id(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class Journal:
    """Append-only record of finished utterances (see the module docstring).

    Args:
      path: the journal file.
      header: the settings; an existing journal with other settings is refused.
      restart: discard an existing journal instead.
    """

    def __init__(self, path: Path, header: dict, restart: bool = False):
        from fsalign.errors import FsalignError

        self.path = path
        self.offsets: Dict[str, int] = {}
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
                self.offsets[entry["id"]] = end
            end += len(line)
        self.file.truncate(end)
        if found is None:
            self._write([header])

    def _lock(self) -> None:
        from fsalign.errors import FsalignError

        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.close()
            raise FsalignError(f"{self.path} is in use by another fsalign align writing the same output") from None

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
        """Records :class:`~fsalign.align.AlignResult` s (one JSON line each), durably."""
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
            self.offsets[entry["id"]] = offset

    def get(self, cut_id: str):
        """The recorded :class:`~fsalign.align.AlignResult` of ``cut_id``."""
        from fsalign.align import AlignResult
        from fsalign.formats import TimedSpan, UtteranceTimes

        self.file.seek(self.offsets[cut_id])
        entry = json.loads(self.file.readline())
        if "error" in entry:
            return AlignResult(cut_id, entry["duration"], error=entry["error"])
        words = [TimedSpan(*s) for s in entry["words"]]
        tokens = [TimedSpan(*s) for s in entry["tokens"]]
        return AlignResult(cut_id, entry["duration"], UtteranceTimes(cut_id, entry["duration"], words, tokens))

    def close(self) -> None:
        self.file.close()


def _atomic_file(path: Path):
    """(temporary path next to ``path``, open binary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    return tmp, open(tmp, "wb")


def _finish(tmp: Path, f, path: Path) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.replace(tmp, path)


def _gzip_writer(raw):
    """A gzip stream without file name or time stamp in its header (the same bytes on every run)."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)


def _write_failed(path: Path, rows: List[List[str]]) -> None:
    if not rows:
        if path.exists():
            path.unlink()  # a stale list from an earlier run would mislead
        return
    tmp, f = _atomic_file(path)
    f.write(("cut_id\treason\n" + "".join(f"{i}\t{' '.join(r.split())}\n" for i, r in rows)).encode("utf-8"))
    _finish(tmp, f, path)


def render(kind: str, output: Path, results: Iterable, cuts: Optional[Iterable] = None,
           level: str = "word") -> None:
    """Writes the aligned utterances of ``results`` (:class:`AlignResult`, in output order).

    Args:
      kind: "ctm", "textgrid" or "cuts".
      output: the final path (a file replaced atomically, or a folder of TextGrids).
      results: the results in output order (failed ones are skipped).
      cuts: for "cuts": the cuts, parallel to ``results``.
      level: CTM level, "word" or "token".
    """
    from fsalign.formats import cut_with_alignment, format_ctm, write_textgrid

    # temporary files of a render that was killed
    litter = output.glob(".*.TextGrid.tmp*") if kind == "textgrid" else output.parent.glob(f".{output.name}.tmp*")
    for path in litter:
        path.unlink(missing_ok=True)
    if kind == "textgrid":
        output.mkdir(parents=True, exist_ok=True)
        for r in results:
            if r.times is not None:
                write_textgrid(r.times, output / f"{r.cut_id}.TextGrid")
        return
    tmp, raw = _atomic_file(output)
    try:
        if kind == "ctm":
            for r in results:
                if r.times is not None:
                    raw.write(format_ctm(r.times, level).encode("utf-8"))
        else:
            stream = _gzip_writer(raw) if output.name.lower().endswith(".gz") else raw
            for r, cut in zip(results, cuts):
                if cut.id != r.cut_id:
                    raise RuntimeError(f"cut order changed while rendering: {cut.id} != {r.cut_id}")
                if r.times is not None:
                    line = json.dumps(cut_with_alignment(cut, r.times).to_dict(), ensure_ascii=False)
                    stream.write((line + "\n").encode("utf-8"))
            if stream is not raw:
                stream.close()
        _finish(tmp, raw, output)
    except BaseException:
        raw.close()
        tmp.unlink(missing_ok=True)
        raise


def _default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"
    return "cpu"


def _fail(message: str):
    raise click.ClickException(" ".join(str(message).split()))


def _scan_cuts(path: Path):
    """(CutSet read lazily, all cut ids in order); fails with one line on an unusable manifest."""
    from lhotse import CutSet

    if not path.exists():
        _fail(f"cuts {path} do not exist")
    try:
        cuts = CutSet.from_file(path)
        ids = [cut.id for cut in cuts]
    except Exception as e:
        _fail(f"cannot read cuts {path}: {type(e).__name__}: {e}")
    if not ids:
        _fail(f"cuts {path} hold no cuts")
    seen = set()
    for cut_id in ids:
        if cut_id in seen:
            _fail(f"cuts {path}: cut id {cut_id} appears more than once (ids must be unique)")
        seen.add(cut_id)
    return cuts, ids


def _tally(ids: List[str], journal: Journal):
    """(utterances aligned, seconds of audio aligned, [cut id, reason] of the failed ones)."""
    aligned, audio, failed = 0, 0.0, []
    for cut_id in ids:
        result = journal.get(cut_id)
        if result.times is None:
            failed.append([cut_id, result.error])
        else:
            aligned += 1
            audio += result.duration
    return aligned, audio, failed


@click.command(context_settings={"show_default": True})
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="Training checkpoint (EXP/best.pt): model, tokenizer, topology, frame shift, corpus prior.")
@click.option("--cuts", "cuts_path", required=True, type=click.Path(path_type=Path),
              help="Lhotse cut manifest (.jsonl.gz) with transcripts; features are computed on the fly "
                   "where the cuts have none.")
@click.option("--output", required=True, type=click.Path(path_type=Path),
              help="OUT.ctm (CTM), OUT.jsonl.gz (cuts with alignment['word'/'token']) or a folder "
                   "(one Praat TextGrid per cut, tiers words and tokens).")
@click.option("--scores", type=click.Choice(["posterior", "grad", "gradext"]), default="posterior",
              help="posterior: Viterbi on the model's output; grad/gradext: GradScore/GradScoreExt on the "
                   "input gradients (10 ms resolution).")
@click.option("--level", type=click.Choice(["word", "token"]), default="word", help="Spans written to a CTM.")
@click.option("--topology", type=click.Choice(["ctc", "hmm", "relaxed"]), default=None,
              help="Topology for posterior alignment.  [default: the one the model was trained with]")
@click.option("--prior-scale", type=float, default=0.0,
              help="β: subtract β·log prior (the checkpoint's corpus prior) from the posteriors.")
@click.option("--blank-penalty", type=float, default=0.0,
              help="k: added to the blank/silence log-probability before renormalising (negative: less blank).")
@click.option("--posterior-scale", type=float, default=None,
              help="α.  [default: the training value with the training topology, else 1]")
@click.option("--transition-scale", type=float, default=None,
              help="γ.  [default: the training value with the training topology, else 1]")
@click.option("--grad-p", type=float, default=0.1, help="p of the gradient p-norm (grad/gradext).")
@click.option("--grad-chunk-size", type=int, default=32,
              help="Transcript positions per batched gradient (grad/gradext); lower needs less memory.")
@click.option("--grad-blank-score", type=float, default=-6.0, help="Blank score γ_ε of GradScore.")
@click.option("--grad-percentile", type=float, default=60.0, help="γ_percentile of GradScoreExt.")
@click.option("--grad-prefix", type=click.Choice(["forward", "onset"]), default="forward", show_default=True,
              help="CTC prefix score in G: forward (eq. 23 read literally: forward variables summed over t) "
                   "or onset (Hori et al.: a_s first emitted at t); see docs/gradscore.md.")
@click.option("--batch-duration", type=float, default=None,
              help="Seconds of audio per batch; 0: one cut per batch.  [default: 100; 0 for grad/gradext on "
                   "CPU, where batching the gradients only adds padding work]")
@click.option("--window", type=int, default=1000,
              help="Consecutive cuts sorted by duration and batched together; a shard is a whole number "
                   "of windows.")
@click.option("--num-workers", type=int, default=0,
              help="DataLoader worker processes loading audio and features (0: in the main process).")
@click.option("--shard", default="0/1",
              help="i/n: align only the i-th of n contiguous parts of the cuts (join them with fsalign merge); "
                   "'env': i/n = $RANK/$WORLD_SIZE (torchrun). '{shard}' in --output becomes i.")
@click.option("--device", default=None,
              help="torch device.  [default: cuda (cuda:$LOCAL_RANK) if available, else cpu]")
@click.option("--restart", is_flag=True,
              help="Discard the journal of an earlier unfinished run instead of resuming.  [default: off, resume]")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar (utterances/s, real-time factor).")
def align(checkpoint, cuts_path, output, scores, level, topology, prior_scale, blank_penalty, posterior_scale,
          transition_scale, grad_p, grad_chunk_size, grad_blank_score, grad_percentile, grad_prefix, batch_duration,
          window, num_workers, shard, device, restart, progress):
    """Align the cuts of a corpus with a trained model and write word (and token) times.

    Utterances that cannot be aligned (unreadable audio, units the model does not know,
    too short for the transcript, NaN scores) are skipped and listed with the reason in
    OUT.failed.tsv. Results go to OUT.journal.jsonl as they come: re-running the same
    command after an interruption continues where it stopped. Exit status 0 if any
    utterance was aligned, 1 (with the reason) if none was or an input is unusable.
    """
    from tqdm import tqdm

    import torch

    from fsalign.align import Aligner, align_cuts, parse_shard, shard_range
    from fsalign.checkpoint import load_checkpoint
    from fsalign.errors import FsalignError

    try:
        if shard == "env":
            if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
                raise FsalignError("--shard env needs $RANK and $WORLD_SIZE (as torchrun sets them)")
            shard = f"{os.environ['RANK']}/{os.environ['WORLD_SIZE']}"
        i, n = parse_shard(shard)
        output = Path(str(output).replace("{shard}", str(i)))
        kind = output_kind(output)
        if num_workers < 0 or window < 1 or (batch_duration is not None and not batch_duration >= 0):
            raise FsalignError("--num-workers must be >= 0, --window >= 1 and --batch-duration >= 0")
    except FsalignError as e:
        _fail(e)
    if not checkpoint.is_file():
        _fail(f"checkpoint {checkpoint} does not exist")
    device = device or _default_device()
    try:
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise FsalignError(f"--device {device}: CUDA is not available here")
    except RuntimeError as e:
        _fail(f"--device {device}: {e}")
    except FsalignError as e:
        _fail(e)
    try:
        loaded = load_checkpoint(checkpoint, device)
        aligner = Aligner(loaded, scores, topology, prior_scale, blank_penalty, posterior_scale, transition_scale,
                          grad_p, grad_chunk_size, grad_blank_score, grad_percentile, grad_prefix)
    except FsalignError as e:
        _fail(e)
    except Exception as e:
        _fail(f"cannot load checkpoint {checkpoint}: {type(e).__name__}: {e}")
    if batch_duration is None:
        batch_duration = 0.0 if scores != "posterior" and aligner.device.type == "cpu" else 100.0
    cuts, all_ids = _scan_cuts(cuts_path)
    if kind == "textgrid":
        unusable = next((x for x in all_ids if "/" in x or "\\" in x or x.startswith(".")), None)
        if unusable is not None:
            _fail(f"cut id {unusable!r} cannot name a TextGrid file; write .ctm or .jsonl.gz instead")
    lo, hi = shard_range(len(all_ids), window, (i, n))
    ids = all_ids[lo:hi]
    header = {"checkpoint": _file_id(checkpoint), "cuts": _file_id(cuts_path), "shard": [i, n], "window": window,
              "batch_duration": batch_duration, **aligner.settings()}
    try:
        journal = Journal(journal_path(output), header, restart)
    except FsalignError as e:
        _fail(e)
    try:
        done = set(journal.offsets)
        bar = tqdm(total=len(ids), initial=sum(1 for x in ids if x in done), unit="utt", desc="align",
                   disable=not progress, dynamic_ncols=True)
        audio, start = 0.0, time.perf_counter()
        for results in align_cuts(aligner, cuts, batch_duration, window, (i, n), len(all_ids), done, num_workers):
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
        _write_failed(listed, failed)
        if aligned or not ids:
            cut_iter = itertools.islice(cuts, lo, hi) if kind == "cuts" else None
            render(kind, output, (journal.get(x) for x in ids), cut_iter, level)
        journal.close()
        journal.path.unlink()
    finally:
        if not journal.file.closed:
            journal.close()
    reasons = Counter(reason.split(":")[0] for _, reason in failed)
    what = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    failures = f"; {len(failed)} failed ({what}), listed in {listed}" if failed else ""
    shard_note = f" (shard {i}/{n})" if n > 1 else ""
    line = f"aligned {aligned} of {len(ids)} utterances{shard_note}, {aligned_s:.1f} s of audio{failures}"
    if ids and not aligned:
        _fail(f"no utterance aligned: {line}")
    if not ids:
        line = f"shard {i}/{n} of {cuts_path} holds no cuts (more shards than windows); wrote an empty output"
    click.echo(f"{line} -> {output}", err=True)


@click.command(context_settings={"show_default": True})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", required=True, type=click.Path(path_type=Path),
              help="The merged output, of the inputs' format (.ctm, .jsonl.gz or a TextGrid folder).")
def merge(inputs, output):
    """Join the outputs of `fsalign align --shard i/n` runs, given in shard order (0/n first).

    CTM and cut files are concatenated in the given order, TextGrid folders combined; their
    OUT.failed.tsv lists are joined into OUTPUT.failed.tsv. The result equals the output of
    one unsharded run with the same options, byte for byte. An utterance found in two inputs
    is an error.
    """
    from fsalign.errors import FsalignError

    try:
        kind = output_kind(output)
        for path in inputs:
            if not path.exists():
                raise FsalignError(f"input {path} does not exist")
            if output_kind(path) != kind:
                raise FsalignError(f"input {path} is not a {kind} output like {output}")
            if journal_path(path).exists():
                raise FsalignError(f"input {path} is unfinished ({journal_path(path)} exists); "
                                   f"re-run its fsalign align command first")
        count = _merge(kind, list(inputs), output)
    except (FsalignError, OSError) as e:
        _fail(e)
    click.echo(f"merged {count} utterances from {len(inputs)} inputs -> {output}", err=True)


def _merge(kind: str, inputs: List[Path], output: Path) -> int:
    from fsalign.errors import FsalignError

    seen: Dict[str, int] = {}  # utterance -> index of its input

    def claim(utt: str, k: int) -> None:
        if seen.setdefault(utt, k) != k:
            raise FsalignError(f"utterance {utt} is in both input {seen[utt] + 1} ({inputs[seen[utt]]}) "
                               f"and input {k + 1} ({inputs[k]})")

    if kind == "textgrid":
        for k, path in enumerate(inputs):
            for grid in sorted(path.glob("*.TextGrid")):
                claim(grid.stem, k)
        output.mkdir(parents=True, exist_ok=True)
        for utt, k in seen.items():
            path = inputs[k]
            tmp, f = _atomic_file(output / f"{utt}.TextGrid")
            with open(path / f"{utt}.TextGrid", "rb") as src:
                shutil.copyfileobj(src, f)
            _finish(tmp, f, output / f"{utt}.TextGrid")
    else:
        tmp, raw = _atomic_file(output)
        stream = _gzip_writer(raw) if output.name.lower().endswith(".gz") else raw
        for k, path in enumerate(inputs):
            opener = gzip.open if path.name.lower().endswith(".gz") else open
            with opener(path, "rb") as src:
                last = None
                for line in src:
                    if kind == "ctm":
                        fields = line.split()
                        if not fields or fields[0].startswith(b";;"):
                            stream.write(line)
                            continue
                        utt = fields[0].decode("utf-8")
                    else:
                        utt = json.loads(line)["id"]
                    if utt != last:
                        claim(utt, k)
                        last = utt
                    stream.write(line)
        if stream is not raw:
            stream.close()
        _finish(tmp, raw, output)
    rows = []
    for path in inputs:
        listed = failed_path(path)
        if listed.exists():
            rows += [line.split("\t", 1) for line in listed.read_text(encoding="utf-8").splitlines()[1:] if line]
    _write_failed(failed_path(output), rows)
    return len(seen)
