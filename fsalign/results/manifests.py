"""Alignments in lhotse manifests and LibriSpeech alignment files.

* :func:`cut_with_alignment` attaches word and token times to a cut's supervisions as
  :class:`lhotse.supervision.AlignmentItem` s, with times relative to the *recording*, as
  lhotse stores them; :func:`cut_spans` reads them back relative to the *cut* (the one place
  that converts between the two, silence dropped by :func:`~fsalign.results.times.words_only`);
* :func:`read_cut_alignments` reads a cut manifest of aligned cuts;
* :func:`read_librispeech_alignments` reads ``*.alignment.txt`` files (the
  CorentinJ/librispeech-alignments format that ``lhotse.recipes.prepare_librispeech`` reads).
"""
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fsalign.errors import FsalignError
from fsalign.results.times import TimedSpan, UtteranceTimes, words_only
from fsalign.util import Seconds

__all__ = ["ALIGNMENT_KINDS", "cut_with_alignment", "cut_spans", "read_cut_alignments",
           "read_librispeech_alignments"]

ALIGNMENT_KINDS = {"word": ("word",), "token": ("token", "phone")}
"""The ``supervision.alignment`` keys read for each level (the first present is used)."""
LHOTSE_DIGITS = 8  # as lhotse rounds its times



def _alignment_items(spans: List[TimedSpan], offset: Seconds) -> list:
    from lhotse.supervision import AlignmentItem

    return [AlignmentItem(symbol=s.label, start=round(offset + s.start, LHOTSE_DIGITS),
                          duration=round(s.end - s.start, LHOTSE_DIGITS), score=s.score) for s in spans]


def cut_with_alignment(cut, utt: UtteranceTimes):
    """A copy of ``cut`` whose supervisions carry ``alignment["word"]`` and ``alignment["token"]``.

    Items are :class:`lhotse.supervision.AlignmentItem` ``(symbol, start, duration, score)`` with
    ``start`` relative to the recording (``cut.start + span.start``), as lhotse stores them
    (:func:`cut_spans` converts back), and ``score`` the span's confidence
    (:mod:`fsalign.results.confidence`; None where unknown). With several supervisions, each
    span goes to the supervision it overlaps most (the first one on a tie). An alignment that
    allowed a mismatching transcript (``utt.mismatch``) also gives ``alignment["untranscribed"]``
    (its garbage spans, symbol ``<unk>``) and ``cut.custom["skipped_words"]``, a list of
    ``{"index": i, "word": w}`` (index among the cut's spoken transcript words).

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

    kinds = [("word", utt.words), ("token", utt.tokens), ("written", utt.written)]
    if utt.mismatch is not None:
        kinds.append(("untranscribed", utt.mismatch.untranscribed))
    new_sups = []
    for index, sup in enumerate(sups):
        alignment = dict(sup.alignment or {})
        for kind, spans in kinds:
            if kind == "written" and not spans:
                continue
            mine = [s for s in spans if len(sups) == 1 or owner(s) == index]
            alignment[kind] = _alignment_items(mine, cut.start)
        new_sups.append(fastcopy(sup, alignment=alignment))
    if utt.mismatch is None:
        return fastcopy(cut, supervisions=new_sups)
    custom = dict(cut.custom or {})
    custom["skipped_words"] = [{"index": w.index, "word": w.label} for w in utt.mismatch.skipped]
    return fastcopy(cut, supervisions=new_sups, custom=custom)


def cut_spans(cut, kinds: Sequence[str] = ALIGNMENT_KINDS["word"]) -> Optional[List[TimedSpan]]:
    """The spans of a cut's ``supervision.alignment[kind]``, relative to the cut start, with their scores.

    ``kind`` is the first of ``kinds`` that every supervision has; silence is dropped and the spans
    are in time order. None if no kind is present in every supervision.
    """
    for kind in kinds:
        if cut.supervisions and all(s.alignment and kind in s.alignment for s in cut.supervisions):
            return words_only(TimedSpan(item.symbol, round(item.start - cut.start, LHOTSE_DIGITS),
                                        round(item.start - cut.start + item.duration, LHOTSE_DIGITS),
                                        None if item.score is None else float(item.score))
                              for s in cut.supervisions for item in s.alignment[kind])
    return None


def read_cut_alignments(path: Path) -> Dict[str, UtteranceTimes]:
    """Word (and token) times of every cut of a manifest; a cut without ``alignment["word"]`` is an error."""
    from lhotse import CutSet

    try:
        cuts = CutSet.from_file(path)
        out = {}
        for cut in cuts:
            words = cut_spans(cut, ALIGNMENT_KINDS["word"])
            if words is None:
                raise FsalignError(f"{path}: cut {cut.id} has no word alignment (supervision.alignment['word'])")
            tokens = cut_spans(cut, ALIGNMENT_KINDS["token"]) or []
            out[cut.id] = UtteranceTimes(cut.id, float(cut.duration), words, tokens)
        return out
    except FsalignError:
        raise
    except Exception as e:
        raise FsalignError(f"{path}: not a readable lhotse cut manifest: {e}") from None


# --- LibriSpeech alignment.txt -----------------------------------------------------------


def read_librispeech_alignments(paths: List[Path]) -> Dict[str, UtteranceTimes]:
    """Word times of every utterance of LibriSpeech ``*.alignment.txt`` files (no tokens)."""
    from lhotse.recipes.librispeech import parse_alignments

    out = {}
    for path in paths:
        try:
            parsed = parse_alignments(path)
        except Exception as e:
            raise FsalignError(f"{path}: not a LibriSpeech alignment file "
                               f"('<utt> \",W1,W2,\" \"e0,e1,e2\"' per line): {e}") from None
        for utt_id, items in parsed.items():
            spans = [TimedSpan(i.symbol, float(i.start), round(i.start + i.duration, LHOTSE_DIGITS)) for i in items]
            duration = spans[-1].end if spans else None  # the entries tile the utterance
            out[utt_id] = UtteranceTimes(utt_id, duration, words_only(spans), [])
    return out
