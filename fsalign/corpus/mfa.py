"""The Montreal Forced Aligner's corpus layout -> lhotse cuts (see :mod:`fsalign.corpus.layouts`)."""
import logging
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

from lhotse import SupervisionSegment

from fsalign.corpus.recordings import (
    AUDIO_SUFFIXES,
    TRANSCRIPT_SUFFIXES,
    LoadedCorpus,
    SkippedItem,
    existing_dir,
    finish_corpus,
    fit_to_audio,
    progress_bar,
    recording_from_header,
    safe_id,
)
from fsalign.util import Pathlike

__all__ = ["load_mfa"]

logger = logging.getLogger(__name__)


def _read_text(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8-sig").split())


def _textgrid_utterances(path: Path) -> List[Tuple[float, float, str, str]]:
    """(start, end, text, tier name) of the non-empty intervals of the interval tiers, in time order."""
    from praatio import textgrid

    grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False, reportingMode="silence")
    spans = [(float(e.start), float(e.end), " ".join(e.label.split()), name) for name in grid.tierNames
             if isinstance(grid.getTier(name), textgrid.IntervalTier) for e in grid.getTier(name).entries]
    return sorted(s for s in spans if s[2] and s[1] > s[0])


def load_mfa(path: Pathlike, progress: bool = False) -> LoadedCorpus:
    """Reads a Montreal Forced Aligner corpus folder (layout ``"mfa"``).

    Args:
      path: the corpus folder.
      progress: show a tqdm progress bar.

    Returns:
      The corpus.

    Raises:
      FsalignError: missing folder, or no usable utterance.
    """
    root = existing_dir(path)
    groups: Dict[Path, Dict[str, Path]] = defaultdict(dict)
    for p in sorted(root.rglob("*")):
        kind = p.suffix.lower()
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts) \
                and (kind in AUDIO_SUFFIXES or kind in TRANSCRIPT_SUFFIXES):
            groups[p.with_suffix("")].setdefault(kind, p)
    skipped: List[SkippedItem] = []
    pairs = []
    for stem in sorted(groups):
        found = groups[stem]
        audio = [found[s] for s in AUDIO_SUFFIXES if s in found]
        texts = [found[s] for s in TRANSCRIPT_SUFFIXES if s in found]
        skipped += [SkippedItem(str(p), f"unused audio: {audio[0].name} has the same stem") for p in audio[1:]]
        if not audio:
            skipped += [SkippedItem(str(p), "transcript without audio") for p in texts]
        elif not texts:
            skipped.append(SkippedItem(str(audio[0]), "audio without transcript (no .lab, .txt or .TextGrid)"))
        else:
            skipped += [SkippedItem(str(p), f"unused transcript: {texts[0].name} is used") for p in texts[1:]]
            pairs.append((audio[0], texts[0]))
    rel = [a.relative_to(root).with_suffix("") for a, _ in pairs]
    unique = len({r.name for r in rel}) == len(rel)
    recordings, sups, stems = [], [], {}
    for (audio, text), r in progress_bar(list(zip(pairs, rel)), progress, f"Reading {root.name}"):
        rid = safe_id(r.name if unique else "-".join(r.parts))
        recording = recording_from_header(audio, rid, skipped)
        if recording is None:
            continue
        speaker = audio.parent.name if audio.parent != root else root.resolve().name
        if text.suffix.lower() != ".textgrid":
            try:
                spans = [(0.0, recording.duration, _read_text(text), speaker)]
            except (OSError, UnicodeDecodeError) as e:
                skipped.append(SkippedItem(str(text), f"unreadable transcript: {e}"))
                continue
        else:
            try:
                spans = _textgrid_utterances(text)
            except Exception as e:  # praatio raises several exception types for malformed files
                skipped.append(SkippedItem(str(text), f"unreadable TextGrid: {type(e).__name__}: {e}"))
                continue
        if not any(s[2] for s in spans):
            skipped.append(SkippedItem(str(text), "empty transcript" if text.suffix.lower() != ".textgrid"
                                       else "empty transcript: the TextGrid has no non-empty interval"))
            continue
        width = max(3, len(str(len(spans))))
        new = [fit_to_audio(SupervisionSegment(id=rid if len(spans) == 1 else f"{rid}-{k + 1:0{width}d}",
                                               recording_id=rid,
                                       start=start, duration=round(end - start, 6), channel=0, text=words,
                                       speaker=tier), recording.duration, str(text), skipped)
               for k, (start, end, words, tier) in enumerate(spans)]
        if any(new):
            recordings.append(recording)
            sups += [s for s in new if s is not None]
            stems[rid] = r.as_posix()
    return finish_corpus(root, "mfa", recordings, sups, stems, skipped)
