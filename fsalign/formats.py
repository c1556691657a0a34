"""Word and token times on disk: CTM, Praat TextGrid, LibriSpeech alignments, lhotse cuts.

One in-memory form, :class:`UtteranceTimes` (an utterance id, its duration, word and token
spans in seconds relative to the start of the cut), and a reader and writer per format:

* CTM (``<utt> <channel> <start> <duration> <label>``, NIST), one level (words or tokens)
  per file, times with millisecond resolution;
* a folder of Praat TextGrids (``<utt>.TextGrid``, tiers ``"words"`` and ``"tokens"``,
  written with praatio; gaps filled with empty intervals as Praat expects);
* LibriSpeech alignments (``*.alignment.txt``, the CorentinJ/librispeech-alignments format
  that ``lhotse.recipes.prepare_librispeech`` reads), read only;
* lhotse cuts (``.jsonl.gz``) whose supervisions carry ``alignment["word"]`` and
  ``alignment["token"]`` as :class:`lhotse.supervision.AlignmentItem` (times relative to the
  recording, as lhotse stores them).

Readers drop silence: intervals with an empty label or one of :data:`SILENCE_LABELS`
(``<eps>``, ``sil``, ``sp``, ``<sil>``, compared case-insensitively), so that a reference and
a hypothesis compare words only. Writers are deterministic (identical input, byte-identical
file) and replace a final file atomically (temporary file in the same folder + ``os.replace``).
"""
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

from fsalign._io import atomic_open, atomic_path
from fsalign.errors import FsalignError

__all__ = [
    "TimedSpan",
    "UtteranceTimes",
    "SILENCE_LABELS",
    "is_silence",
    "format_ctm",
    "write_ctm",
    "read_ctm",
    "write_textgrid",
    "read_textgrid",
    "cut_with_alignment",
    "read_alignments",
    "read_utterances",
    "alignment_format",
]

Pathlike = Union[str, Path]
Seconds = float

SILENCE_LABELS = frozenset({"", "<eps>", "sil", "sp", "<sil>"})
"""Labels (lower-cased, stripped) that mark silence, not a word or token."""

LEVELS = ("word", "token")
_TEXTGRID_TIERS = {"word": ("words",), "token": ("tokens", "phones")}
_LHOTSE_KINDS = {"word": ("word",), "token": ("token", "phone")}
_TEXTGRID_DIGITS = 6  # TextGrid times: microseconds (frame times are multiples of 10 ms)
_LHOTSE_DIGITS = 8  # as lhotse rounds its times


@dataclass(frozen=True)
class TimedSpan:
    """One word or token.

    Attributes:
      label: the word or token.
      start: start in seconds, relative to the start of the cut (recording for a whole-recording cut).
      end: end in seconds (exclusive).
    """

    label: str
    start: Seconds
    end: Seconds

    @property
    def duration(self) -> Seconds:
        return self.end - self.start


@dataclass
class UtteranceTimes:
    """The word and token times of one aligned utterance.

    Attributes:
      utt_id: utterance (cut) id.
      duration: length of the utterance in seconds; None where the source does not say (CTM).
      words: word spans in time order.
      tokens: token spans in time order (may be empty).
      channel: the CTM channel column.
    """

    utt_id: str
    duration: Optional[Seconds]
    words: List[TimedSpan] = field(default_factory=list)
    tokens: List[TimedSpan] = field(default_factory=list)
    channel: int = 1

    def spans(self, level: str = "word") -> List[TimedSpan]:
        """``words`` or ``tokens``."""
        return self.words if _check_level(level) == "word" else self.tokens


def _check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    return level


def is_silence(label: str) -> bool:
    """True for an empty label or a silence marker of :data:`SILENCE_LABELS`."""
    return label.strip().lower() in SILENCE_LABELS


def _keep(spans: Iterable[TimedSpan]) -> List[TimedSpan]:
    return sorted((s for s in spans if not is_silence(s.label)), key=lambda s: (s.start, s.end))


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


# --- CTM ---------------------------------------------------------------------------------


def format_ctm(utt: UtteranceTimes, level: str = "word") -> str:
    """CTM lines of one utterance: ``<utt> <channel> <start> <duration> <label>`` per span.

    Start and end are rounded to milliseconds first and the duration is their difference,
    so ``start + duration`` reproduces the rounded end exactly.

    Args:
      utt: the utterance.
      level: "word" or "token".

    Returns:
      The lines, each ending in a newline ("" for no spans).
    """
    lines = []
    for span in utt.spans(level):
        if not span.label or any(c.isspace() for c in span.label):
            raise FsalignError(f"utterance {utt.utt_id}: CTM labels must be non-empty without spaces, "
                               f"got {span.label!r}")
        start, end = round(span.start, 3), round(span.end, 3)
        lines.append(f"{utt.utt_id} {utt.channel} {start:.3f} {end - start:.3f} {span.label}\n")
    return "".join(lines)


def write_ctm(utts: Iterable[UtteranceTimes], path: Pathlike, level: str = "word") -> None:
    """Writes the CTM of ``utts`` (in the given order) to ``path`` atomically."""
    _atomic_write_text(Path(path), "".join(format_ctm(u, level) for u in utts))


def read_ctm(path: Pathlike) -> Dict[str, List[TimedSpan]]:
    """Spans per utterance of a CTM file, silence dropped, in time order.

    Lines have 5 or more columns (a 6th, the confidence, is ignored); empty lines and
    ``;;`` comments are skipped.

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
            spans[fields[0]].append(TimedSpan(fields[4], start, round(start + duration, _TEXTGRID_DIGITS)))
    return {utt: _keep(s) for utt, s in spans.items()}


# --- TextGrid ----------------------------------------------------------------------------


def _tier_entries(spans: List[TimedSpan], utt_id: str, tier: str) -> list:
    entries, previous_end = [], 0.0
    for span in spans:
        start, end = round(span.start, _TEXTGRID_DIGITS), round(span.end, _TEXTGRID_DIGITS)
        if start < previous_end or end <= start:
            raise FsalignError(f"utterance {utt_id}: {tier} span {span.label!r} [{span.start}, {span.end}] "
                               f"is empty or overlaps the previous one")
        entries.append((start, end, span.label))
        previous_end = end
    return entries


def write_textgrid(utt: UtteranceTimes, path: Pathlike) -> None:
    """Writes one Praat TextGrid (long format) with interval tiers "words" and "tokens".

    The grid spans [0, duration] (or [0, last end] without a duration); the gaps between
    spans are filled with empty intervals (praatio ``includeBlankSpaces``), as Praat needs.

    Args:
      utt: the utterance; times are rounded to microseconds.
      path: the ``.TextGrid`` file, replaced atomically.
    """
    from praatio import textgrid
    from praatio.data_classes.interval_tier import IntervalTier

    tiers = {"words": _tier_entries(utt.words, utt.utt_id, "words"),
             "tokens": _tier_entries(utt.tokens, utt.utt_id, "tokens")}
    last = max([e[1] for entries in tiers.values() for e in entries] + [0.0])
    xmax = round(utt.duration, _TEXTGRID_DIGITS) if utt.duration is not None else last
    if xmax < last:
        raise FsalignError(f"utterance {utt.utt_id}: a span ends at {last} s, after its duration {utt.duration} s")
    if xmax <= 0:
        raise FsalignError(f"utterance {utt.utt_id}: cannot write a TextGrid of length 0")
    grid = textgrid.Textgrid()
    for name, entries in tiers.items():
        grid.addTier(IntervalTier(name, entries, 0.0, xmax))
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
            return _keep(TimedSpan(label, float(start), float(end)) for start, end, label in entries)
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
    tokens = []
    if any(name in grid.tierNames for name in _TEXTGRID_TIERS["token"]):
        tokens = _read_tier(grid, path, _TEXTGRID_TIERS["token"])
    return UtteranceTimes(path.stem, float(grid.maxTimestamp), words, tokens)


# --- lhotse ------------------------------------------------------------------------------


def _alignment_items(spans: List[TimedSpan], offset: Seconds) -> list:
    from lhotse.supervision import AlignmentItem

    return [AlignmentItem(symbol=s.label, start=round(offset + s.start, _LHOTSE_DIGITS),
                          duration=round(s.end - s.start, _LHOTSE_DIGITS)) for s in spans]


def cut_with_alignment(cut, utt: UtteranceTimes):
    """A copy of ``cut`` whose supervisions carry ``alignment["word"]`` and ``alignment["token"]``.

    Items are :class:`lhotse.supervision.AlignmentItem` ``(symbol, start, duration)`` with
    ``start`` relative to the recording (``cut.start + span.start``), as lhotse stores them
    (:func:`fsalign.corpus.reference_words` converts back). With several supervisions, each
    span goes to the supervision it overlaps most (the first one on a tie).

    Args:
      cut: a lhotse cut with at least one supervision (``MonoCut``).
      utt: its times, relative to the cut start.

    Raises:
      FsalignError: the cut has no supervision.
    """
    from lhotse.utils import fastcopy

    sups = sorted(cut.supervisions, key=lambda s: s.start)
    if not sups:
        raise FsalignError(f"cut {cut.id}: has no supervision to attach the alignment to")

    def owner(span: TimedSpan) -> int:
        overlaps = [min(span.end, s.end) - max(span.start, s.start) for s in sups]
        return max(range(len(sups)), key=lambda i: (overlaps[i], -i))

    new_sups = []
    for index, sup in enumerate(sups):
        alignment = dict(sup.alignment or {})
        for kind, spans in (("word", utt.words), ("token", utt.tokens)):
            mine = [s for s in spans if len(sups) == 1 or owner(s) == index]
            alignment[kind] = _alignment_items(mine, cut.start)
        new_sups.append(fastcopy(sup, alignment=alignment))
    return fastcopy(cut, supervisions=new_sups)


def _cut_spans(cut, kinds) -> Optional[List[TimedSpan]]:
    for kind in kinds:
        if cut.supervisions and all(s.alignment and kind in s.alignment for s in cut.supervisions):
            return _keep(TimedSpan(item.symbol, round(item.start - cut.start, _LHOTSE_DIGITS),
                                   round(item.start - cut.start + item.duration, _LHOTSE_DIGITS))
                         for s in cut.supervisions for item in s.alignment[kind])
    return None


def _read_cuts(path: Path) -> Dict[str, UtteranceTimes]:
    from lhotse import CutSet

    try:
        cuts = CutSet.from_file(path)
        out = {}
        for cut in cuts:
            words = _cut_spans(cut, _LHOTSE_KINDS["word"])
            if words is None:
                raise FsalignError(f"{path}: cut {cut.id} has no word alignment (supervision.alignment['word'])")
            tokens = _cut_spans(cut, _LHOTSE_KINDS["token"]) or []
            out[cut.id] = UtteranceTimes(cut.id, float(cut.duration), words, tokens)
        return out
    except FsalignError:
        raise
    except Exception as e:
        raise FsalignError(f"{path}: not a readable lhotse cut manifest: {e}") from None


# --- LibriSpeech alignment.txt -----------------------------------------------------------


def _read_librispeech(paths: List[Path]) -> Dict[str, UtteranceTimes]:
    from lhotse.recipes.librispeech import parse_alignments

    out = {}
    for path in paths:
        try:
            parsed = parse_alignments(path)
        except Exception as e:
            raise FsalignError(f"{path}: not a LibriSpeech alignment file "
                               f"('<utt> \",W1,W2,\" \"e0,e1,e2\"' per line): {e}") from None
        for utt_id, items in parsed.items():
            spans = [TimedSpan(i.symbol, float(i.start), round(i.start + i.duration, _LHOTSE_DIGITS)) for i in items]
            duration = spans[-1].end if spans else None  # the entries tile the utterance
            out[utt_id] = UtteranceTimes(utt_id, duration, _keep(spans), [])
    return out


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
    duration and the tier "tokens" (or "phones") as tokens; cuts their duration and
    ``alignment["token"]`` (or "phone"); LibriSpeech alignments the last entry's end
    (their entries tile the utterance) and no tokens.

    Returns:
      utterance id -> :class:`UtteranceTimes`, in the order of the source (TextGrids by name).
    """
    _check_level(level)
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
        return _read_librispeech(files)
    return _read_cuts(path)


def read_alignments(path: Pathlike, level: str = "word") -> Dict[str, List[TimedSpan]]:
    """Spans of one level per utterance from a CTM file, a TextGrid folder, LibriSpeech
    ``.alignment.txt`` files or lhotse cuts with alignments; silence dropped.

    Args:
      path: the file or folder (format from :func:`alignment_format`).
      level: "word" or "token" (a CTM file has one level: its spans are returned either way).

    Returns:
      utterance id -> spans in time order.
    """
    _check_level(level)
    if alignment_format(path) == "ctm":
        return read_ctm(path)
    return {u: t.spans(level) for u, t in read_utterances(path, level).items()}
