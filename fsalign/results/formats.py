"""Word and token times on disk: CTM, Praat TextGrid, LibriSpeech alignments, lhotse cuts.

One in-memory form, :class:`UtteranceTimes` (an utterance id, its duration, word and token
spans in seconds relative to the start of the cut), and a reader and writer per format:

* CTM (``<utt> <channel> <start> <duration> <label> [<confidence>]``, NIST), one level (words or
  tokens) per file, times with millisecond resolution, the confidence (the 6th column) where known;
* a folder of Praat TextGrids (``<utt>.TextGrid``, tiers ``"words"`` and ``"tokens"``,
  written with praatio; gaps filled with empty intervals as Praat expects), and where the words'
  confidences are known a tier :data:`CONFIDENCE_TIER` with the intervals of the words tier,
  each labelled with its word's confidence (``0.9731``);
* LibriSpeech alignments (``*.alignment.txt``, the CorentinJ/librispeech-alignments format
  that ``lhotse.recipes.prepare_librispeech`` reads), read only;
* lhotse cuts (``.jsonl.gz``) whose supervisions carry ``alignment["word"]`` and
  ``alignment["token"]`` as :class:`lhotse.supervision.AlignmentItem` (times relative to the
  recording, as lhotse stores them).

An alignment that allowed the transcript not to match the audio (``UtteranceTimes.mismatch``)
also marks its skipped words and untranscribed stretches: CTM comment lines
``;; skipped <utt> <channel> <word index> <word>`` and ``;; untranscribed <utt> <channel> <start>
<duration>`` in time order among the word lines (readers skip ``;;`` lines); TextGrid tiers
``untranscribed`` (intervals labelled ``<unk>``) and ``skipped`` (a point tier: each skipped word,
spoken form, at the end of the aligned word before it; words at the same place share a point);
cuts: ``alignment["untranscribed"]`` and ``custom["skipped_words"]``
(:func:`~fsalign.results.manifests.cut_with_alignment`). Skipped words are on no words tier and
have no CTM line.

Readers drop silence: intervals with an empty label or one of :data:`SILENCE_LABELS`
(``<eps>``, ``sil``, ``sp``, ``<sil>``, compared case-insensitively), so that a reference and
a hypothesis compare words only. Writers are deterministic (identical input, byte-identical
file) and replace a final file atomically (temporary file in the same folder + ``os.replace``).
"""
import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from fsalign.errors import FsalignError
from fsalign.results.confidence import CONFIDENCE_DIGITS
from fsalign.results.manifests import (
    cut_with_alignment,
    read_cut_alignments,
    read_librispeech_alignments,
)
from fsalign.results.times import (
    SILENCE_LABELS,
    TimedSpan,
    UtteranceTimes,
    check_level,
    is_silence,
    words_only,
)
from fsalign.util import Pathlike, Seconds, atomic_open, atomic_path

__all__ = [
    "TimedSpan",
    "UtteranceTimes",
    "SILENCE_LABELS",
    "is_silence",
    "format_ctm",
    "write_ctm",
    "read_ctm",
    "write_textgrid",
    "write_recording_textgrid",
    "read_textgrid",
    "cut_with_alignment",
    "read_alignments",
    "read_utterances",
    "alignment_format",
    "MISMATCH_TIERS",
    "CONFIDENCE_TIER",
]


_TEXTGRID_TIERS = {"word": ("words",), "token": ("tokens", "phones")}
MISMATCH_TIERS = ("untranscribed", "skipped")
"""The TextGrid tiers of an alignment that allowed a mismatching transcript (interval tier, point tier)."""
CONFIDENCE_TIER = "confidence"
"""The TextGrid tier of the words' confidences (an interval tier mirroring the words tier)."""
_TEXTGRID_DIGITS = 6  # TextGrid times: microseconds (frame times are multiples of 10 ms)


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


# --- CTM ---------------------------------------------------------------------------------


def format_ctm(utt: UtteranceTimes, level: str = "word") -> str:
    """CTM lines of one utterance: ``<utt> <channel> <start> <duration> <label> [<confidence>]`` per span.

    Start and end are rounded to milliseconds first and the duration is their difference,
    so ``start + duration`` reproduces the rounded end exactly. The confidence column is written
    for a span whose ``score`` is known (:data:`~fsalign.results.confidence.CONFIDENCE_DIGITS` decimals).

    Args:
      utt: the utterance.
      level: "word" or "token".

    Returns:
      The lines, each ending in a newline ("" for no spans).
    """
    lines = []
    notes = _mismatch_notes(utt)
    for span in utt.spans(level):
        if not span.label or any(c.isspace() for c in span.label):
            raise FsalignError(f"utterance {utt.utt_id}: CTM labels must be non-empty without spaces, "
                               f"got {span.label!r}")
        while notes and notes[0][0] <= span.start:
            lines.append(notes.pop(0)[1])
        start, end = round(span.start, 3), round(span.end, 3)
        score = "" if span.score is None else f" {span.score:.{CONFIDENCE_DIGITS}f}"
        lines.append(f"{utt.utt_id} {utt.channel} {start:.3f} {end - start:.3f} {span.label}{score}\n")
    return "".join(lines + [line for _, line in notes])


def _mismatch_notes(utt: UtteranceTimes) -> list:
    """(time, comment line) of the skipped words and untranscribed stretches, in time order (none without)."""
    if utt.mismatch is None:
        return []
    notes = [(w.at, f";; skipped {utt.utt_id} {utt.channel} {w.index} {w.label}\n") for w in utt.mismatch.skipped]
    for span in utt.mismatch.untranscribed:
        start, end = round(span.start, 3), round(span.end, 3)
        notes.append((span.start, f";; untranscribed {utt.utt_id} {utt.channel} {start:.3f} {end - start:.3f}\n"))
    return sorted(notes, key=lambda note: note[0])


def write_ctm(utts: Iterable[UtteranceTimes], path: Pathlike, level: str = "word") -> None:
    """Writes the CTM of ``utts`` (in the given order) to ``path`` atomically."""
    _atomic_write_text(Path(path), "".join(format_ctm(u, level) for u in utts))


def read_ctm(path: Pathlike) -> Dict[str, List[TimedSpan]]:
    """Spans per utterance of a CTM file, silence dropped, in time order.

    Lines have 5 or more columns; a 6th, the confidence, becomes the span's ``score`` when it is a
    finite number (other tools' CTMs may put something else there: then the score is None); empty
    lines and ``;;`` comments are skipped.

    Raises:
      FsalignError: the file is missing or a line is malformed (file and line number named).
    """
    path = Path(path)
    if not path.is_file():
        raise FsalignError(f"CTM file {path} does not exist")
    spans: Dict[str, List[TimedSpan]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith(";;"):
                continue
            try:
                if len(fields) < 5:
                    raise ValueError("fewer than 5 columns")
                start, duration = float(fields[2]), float(fields[3])
                if not (math.isfinite(start) and math.isfinite(duration)) or duration < 0:
                    raise ValueError("start and duration must be finite, duration >= 0")
            except ValueError as e:
                raise FsalignError(f"{path}:{number}: not a CTM line "
                                   f"('<utt> <channel> <start> <duration> <label>'): {e}: {line.strip()!r}") from None
            score = _number(fields[5]) if len(fields) > 5 else None
            spans[fields[0]].append(TimedSpan(fields[4], start, round(start + duration, _TEXTGRID_DIGITS), score))
    return {utt: words_only(s) for utt, s in spans.items()}


def _number(text: str) -> Optional[float]:
    """``float(text)`` if it is a finite number, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# --- TextGrid ----------------------------------------------------------------------------


def _tier_entries(spans: List[TimedSpan], name: str, tier: str) -> list:
    entries, previous_end = [], 0.0
    for span in spans:
        start, end = round(span.start, _TEXTGRID_DIGITS), round(span.end, _TEXTGRID_DIGITS)
        if start < previous_end or end <= start:
            raise FsalignError(f"{name}: {tier} span {span.label!r} [{span.start}, {span.end}] "
                               f"is empty or overlaps the previous one")
        entries.append((start, end, span.label))
        previous_end = end
    return entries


def write_textgrid(utt: UtteranceTimes, path: Pathlike, token_tier: str = "tokens") -> None:
    """Writes one Praat TextGrid (long format) with interval tiers "words" and ``token_tier``.

    The words tier holds the words as written where the utterance has them
    (``UtteranceTimes.written``), else its words; where they have confidences, the tier
    :data:`CONFIDENCE_TIER` holds them (the same intervals, labelled with the confidence); an
    utterance with ``mismatch`` adds the tiers :data:`MISMATCH_TIERS` (module docstring). The grid
    spans [0, duration] (or [0, last end] without a duration); the gaps between spans are filled
    with empty intervals (praatio ``includeBlankSpaces``), as Praat needs: silence is an empty
    interval.

    Args:
      utt: the utterance; times are rounded to microseconds.
      path: the ``.TextGrid`` file, replaced atomically.
      token_tier: name of the token tier ("tokens", or "phones" for a phone model).
    """
    write_recording_textgrid(path, f"utterance {utt.utt_id}", utt.duration, [utt], token_tier)


def write_recording_textgrid(path: Pathlike, name: str, duration: Optional[Seconds],
                             utterances: List[UtteranceTimes], token_tier: str = "tokens") -> None:
    """Writes one TextGrid holding several utterances of one recording (times relative to the recording).

    Args:
      path: the ``.TextGrid`` file, replaced atomically.
      name: what the grid holds, named in errors ("recording r1").
      duration: the recording's length in seconds (None: the last span's end).
      utterances: its utterances in time order, already shifted to recording time
        (:meth:`UtteranceTimes.shifted`).
      token_tier: name of the token tier.

    Raises:
      FsalignError: overlapping or empty spans, a span past the duration, or nothing to write.
    """
    from praatio import textgrid
    from praatio.data_classes.interval_tier import IntervalTier

    words = [s for u in utterances for s in (u.written or u.words)]
    tokens = [s for u in utterances for s in u.tokens]
    tiers = {"words": _tier_entries(words, name, "words"), token_tier: _tier_entries(tokens, name, token_tier)}
    scored = [dataclasses.replace(s, label=f"{s.score:.{CONFIDENCE_DIGITS}f}") for s in words if s.score is not None]
    if scored:
        tiers[CONFIDENCE_TIER] = _tier_entries(scored, name, CONFIDENCE_TIER)
    mismatch = [u.mismatch for u in utterances if u.mismatch is not None]
    if mismatch:
        garbage = [s for m in mismatch for s in m.untranscribed]
        tiers[MISMATCH_TIERS[0]] = _tier_entries(garbage, name, MISMATCH_TIERS[0])
    last = max([e[1] for entries in tiers.values() for e in entries] + [0.0])
    xmax = round(duration, _TEXTGRID_DIGITS) if duration is not None else last
    if xmax < last:
        raise FsalignError(f"{name}: a span ends at {last} s, after its duration {duration} s")
    if xmax <= 0:
        raise FsalignError(f"{name}: cannot write a TextGrid of length 0")
    grid = textgrid.Textgrid()
    for name, entries in tiers.items():
        grid.addTier(IntervalTier(name, entries, 0.0, xmax))
    if mismatch:
        from praatio.data_classes.point_tier import PointTier

        points: Dict[float, List[str]] = {}
        for w in (w for m in mismatch for w in m.skipped):
            points.setdefault(min(xmax, round(w.at, _TEXTGRID_DIGITS)), []).append(w.label)
        grid.addTier(PointTier(MISMATCH_TIERS[1], [(t, " ".join(labels)) for t, labels in sorted(points.items())],
                               0.0, xmax))
    with atomic_path(path) as tmp:
        grid.save(str(tmp), format="long_textgrid", includeBlankSpaces=True, minimumIntervalLength=None,
                  reportingMode="error")


def _open_textgrid(path: Path):
    from praatio import textgrid

    try:
        return textgrid.openTextgrid(str(path), includeEmptyIntervals=False, reportingMode="silence")
    except FileNotFoundError:
        raise FsalignError(f"TextGrid {path} does not exist") from None
    except Exception as e:  # praatio raises many kinds on malformed files
        raise FsalignError(f"{path}: not a readable TextGrid: {e}") from None


def _read_tier(grid, path: Path, names) -> List[TimedSpan]:
    from praatio.data_classes.interval_tier import IntervalTier

    for name in names:
        if name in grid.tierNames and isinstance(grid.getTier(name), IntervalTier):
            entries = grid.getTier(name).entries
            return words_only(TimedSpan(label, float(start), float(end)) for start, end, label in entries)
    raise FsalignError(f"{path}: no interval tier {' or '.join(map(repr, names))} (tiers: {list(grid.tierNames)})")


def read_textgrid(path: Pathlike, tier: str = "words") -> List[TimedSpan]:
    """Spans of one tier of a TextGrid, silence dropped, in time order.

    Raises:
      FsalignError: the file is missing or unreadable, or has no such tier.
    """
    path = Path(path)
    return _read_tier(_open_textgrid(path), path, (tier,))


def _read_textgrid_utterance(path: Path) -> UtteranceTimes:
    grid = _open_textgrid(path)
    words = _read_tier(grid, path, _TEXTGRID_TIERS["word"])
    if CONFIDENCE_TIER in grid.tierNames:
        scores = {(s.start, s.end): _number(s.label) for s in _read_tier(grid, path, (CONFIDENCE_TIER,))}
        words = [dataclasses.replace(w, score=scores.get((w.start, w.end))) for w in words]
    tokens = []
    if any(name in grid.tierNames for name in _TEXTGRID_TIERS["token"]):
        tokens = _read_tier(grid, path, _TEXTGRID_TIERS["token"])
    return UtteranceTimes(path.stem, float(grid.maxTimestamp), words, tokens)


# --- dispatch ----------------------------------------------------------------------------


def alignment_format(path: Pathlike) -> str:
    """The format of ``path``: "ctm", "textgrid" (folder), "librispeech" (file or folder) or "cuts".

    Raises:
      FsalignError: missing path or unknown format.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        if next(path.glob("*.TextGrid"), None) is not None:
            return "textgrid"
        if next(path.rglob("*.alignment.txt"), None) is not None:
            return "librispeech"
        raise FsalignError(f"{path}: a folder with neither *.TextGrid nor *.alignment.txt files")
    if not path.exists():
        raise FsalignError(f"{path} does not exist")
    if name.endswith(".ctm"):
        return "ctm"
    if name.endswith(".alignment.txt"):
        return "librispeech"
    if name.endswith((".jsonl.gz", ".jsonl", ".json.gz", ".json")):
        return "cuts"
    raise FsalignError(f"{path}: unknown alignment format (expected .ctm, a TextGrid folder, "
                       f"LibriSpeech .alignment.txt files or lhotse cuts .jsonl.gz)")


def read_utterances(path: Pathlike, level: str = "word") -> Dict[str, UtteranceTimes]:
    """Every utterance of an alignment file or folder (see :func:`alignment_format`).

    A CTM holds one level: its spans become ``words`` (``level="word"``) or ``tokens``
    (``level="token"``), and ``duration`` is None. TextGrids give their ``xmax`` as the
    duration, the tier "tokens" (or "phones") as tokens and the tier :data:`CONFIDENCE_TIER` as the
    words' scores; CTMs their 6th column as scores; cuts their duration, the items' scores and
    ``alignment["token"]`` (or "phone"); LibriSpeech alignments the last entry's end
    (their entries tile the utterance) and no tokens.

    Returns:
      utterance id -> :class:`UtteranceTimes`, in the order of the source (TextGrids by name).
    """
    check_level(level)
    path = Path(path)
    kind = alignment_format(path)
    if kind == "ctm":
        spans = read_ctm(path)
        if level == "word":
            return {u: UtteranceTimes(u, None, s, []) for u, s in spans.items()}
        return {u: UtteranceTimes(u, None, [], s) for u, s in spans.items()}
    if kind == "textgrid":
        return {p.stem: _read_textgrid_utterance(p) for p in sorted(path.glob("*.TextGrid"))}
    if kind == "librispeech":
        files = sorted(path.rglob("*.alignment.txt")) if path.is_dir() else [path]
        return read_librispeech_alignments(files)
    return read_cut_alignments(path)


def read_alignments(path: Pathlike, level: str = "word") -> Dict[str, List[TimedSpan]]:
    """Spans of one level per utterance from alignments on disk; silence dropped.

    Reads a CTM file, a TextGrid folder, LibriSpeech ``.alignment.txt`` files or lhotse cuts with
    alignments.

    Args:
      path: the file or folder (format from :func:`alignment_format`).
      level: "word" or "token" (a CTM file has one level: its spans are returned either way).

    Returns:
      utterance id -> spans in time order.
    """
    check_level(level)
    if alignment_format(path) == "ctm":
        return read_ctm(path)
    return {u: t.spans(level) for u, t in read_utterances(path, level).items()}
