"""The files of a corpus alignment: CTM, TextGrid folder or cuts, each written atomically; merge.

``fsalign align --output OUT`` writes ``OUT`` (its :func:`output_kind` follows the suffix),
``OUT.failed.tsv`` (cut id, reason) if any utterance failed, and, while it runs, the journal
``OUT.journal.jsonl`` (:mod:`fsalign.aligning.journal`). :func:`render` writes the final output in the
cuts' order to a temporary file next to it and moves it into place with ``os.replace`` (a
TextGrid folder: one file at a time, each atomically), so ``OUT`` is never half-written.

Sharding: ``fsalign align --shard i/n`` aligns a contiguous range of windows of the manifest,
so :func:`merge_outputs` joins the shard outputs (given in shard order) by concatenation, byte
for byte equal to an unsharded run with the same options.
"""
import gzip
import json
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from fsalign.errors import FsalignError
from fsalign.util import Pathlike, atomic_open

__all__ = ["OUTPUT_KINDS", "output_kind", "journal_path", "failed_path", "check_cut_ids", "write_failed", "render",
           "merge_outputs"]

OUTPUT_KINDS = ("ctm", "textgrid", "cuts")


def output_kind(path: Pathlike) -> str:
    """"ctm" (``.ctm``), "cuts" (``.jsonl.gz``/``.jsonl``) or "textgrid" (a folder: no suffix or existing)."""
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


def check_cut_ids(kind: str, ids: Iterable[str]) -> None:
    """Raises FsalignError if a cut id cannot name a file of output ``kind``.

    For TextGrid: a cut id with a path separator, or a leading dot.
    """
    if kind == "textgrid":
        unusable = next((x for x in ids if "/" in x or "\\" in x or x.startswith(".")), None)
        if unusable is not None:
            raise FsalignError(f"cut id {unusable!r} cannot name a TextGrid file; write .ctm or .jsonl.gz instead")


def _gzip_writer(raw):
    """A gzip stream without file name or time stamp in its header (the same bytes on every run)."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)


def write_failed(path: Path, rows: List[List[str]]) -> None:
    """Writes ``OUT.failed.tsv`` atomically; with no rows, removes a stale one instead.

    The file has the header ``cut_id<TAB>reason``; whitespace in reasons is collapsed.
    """
    if not rows:
        if path.exists():
            path.unlink()  # a stale list from an earlier run would mislead
        return
    with atomic_open(path) as f:
        f.write(("cut_id\treason\n" + "".join(f"{i}\t{' '.join(r.split())}\n" for i, r in rows)).encode("utf-8"))


def render(kind: str, output: Path, results: Iterable, cuts: Optional[Iterable] = None,
           level: str = "word") -> None:
    """Writes the aligned utterances of ``results`` (:class:`~fsalign.aligning.aligner.AlignResult`, in output order).

    Args:
      kind: "ctm", "textgrid" or "cuts".
      output: the final path (a file replaced atomically, or a folder of TextGrids).
      results: the results in output order (failed ones are skipped).
      cuts: for "cuts": the cuts, parallel to ``results``.
      level: CTM level, "word" or "token".
    """
    from fsalign.results.formats import format_ctm, write_textgrid
    from fsalign.results.manifests import cut_with_alignment

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
    with atomic_open(output) as raw:
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


def merge_outputs(inputs: List[Path], output: Path) -> int:
    """Joins the outputs of ``fsalign align --shard i/n`` runs, given in shard order.

    CTM and cut files are concatenated, TextGrid folders combined, their ``failed.tsv``
    lists joined into ``OUTPUT.failed.tsv``.

    Returns:
      The number of utterances merged.

    Raises:
      FsalignError: an input is missing, of another format than ``output``, unfinished
        (its journal exists), or an utterance is in two inputs.
    """
    kind = output_kind(output)
    for path in inputs:
        if not path.exists():
            raise FsalignError(f"input {path} does not exist")
        if output_kind(path) != kind:
            raise FsalignError(f"input {path} is not a {kind} output like {output}")
        if journal_path(path).exists():
            raise FsalignError(f"input {path} is unfinished ({journal_path(path)} exists); "
                               f"re-run its fsalign align command first")
    return _merge(kind, inputs, output)


def _merge(kind: str, inputs: List[Path], output: Path) -> int:
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
            with open(inputs[k] / f"{utt}.TextGrid", "rb") as src, atomic_open(output / f"{utt}.TextGrid") as f:
                shutil.copyfileobj(src, f)
    else:
        with atomic_open(output) as raw:  # a failed merge leaves nothing behind
            _concatenate(kind, inputs, raw, output, claim)
    rows = []
    for path in inputs:
        listed = failed_path(path)
        if listed.exists():
            rows += [line.split("\t", 1) for line in listed.read_text(encoding="utf-8").splitlines()[1:] if line]
    write_failed(failed_path(output), rows)
    return len(seen)


def _concatenate(kind: str, inputs: List[Path], raw, output: Path, claim) -> None:
    """Copies the lines of CTM / cut inputs to ``raw`` in order, claiming each utterance."""
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
