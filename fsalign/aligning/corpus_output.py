"""The outputs of aligning a user's corpus: files that mirror the corpus, a CTM and Lhotse cuts.

* ``OUTPUT/<stem>.TextGrid`` for every aligned audio file (``cut.custom["output_stem"]``, e.g.
  ``spk1/utt_007``), times from the start of that file: a recording cut into several segments gets
  one TextGrid holding them all. Tiers: ``words`` (the words as written in the transcript,
  ``"Hello,"``, ``"40"``, each spanning the spoken words it became) and ``phones`` (phone models)
  or ``tokens`` (character and subword models), and ``confidence`` (the words' intervals labelled
  with their confidence, :mod:`fsalign.results.confidence`); silence is an empty interval.
* ``OUTPUT/alignments.ctm``: one line per *spoken* word (what the model aligned: ``FORTY``,
  upper case, no punctuation, as scoring tools expect), ``<recording> 1 <start> <duration>
  <word> <confidence>`` with times from the start of the recording, recordings sorted, words in
  time order.
* ``OUTPUT/alignments.jsonl.gz``: the cuts with ``alignment["word"]``, ``["token"]`` and
  ``["written"]`` on their supervisions (:func:`fsalign.results.manifests.cut_with_alignment`).

With ``--allow-mismatch`` every output also marks the transcript words that were skipped and the
untranscribed stretches (:mod:`fsalign.results.formats`): TextGrid tiers ``untranscribed`` and
``skipped``, ``;;`` comment lines in the CTM, ``alignment["untranscribed"]`` and
``custom["skipped_words"]`` on the cuts.

Every file is written atomically and deterministically (the same alignment gives the same bytes).
"""
import gzip
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, Tuple

from fsalign.aligning.journal import AlignResult
from fsalign.results.formats import format_ctm, write_recording_textgrid
from fsalign.results.manifests import cut_with_alignment
from fsalign.results.times import UtteranceTimes
from fsalign.util import atomic_open

__all__ = ["CTM_NAME", "CUTS_NAME", "output_stem", "recording_tokens", "write_corpus_outputs"]

CTM_NAME = "alignments.ctm"
CUTS_NAME = "alignments.jsonl.gz"


def output_stem(cut) -> str:
    """Where a cut's TextGrid goes below the output folder (without ``.TextGrid``): its corpus path.

    Cuts loaded by :func:`fsalign.corpus.layouts.load_corpus` carry it as
    ``custom["output_stem"]``; other cuts use their recording id.
    """
    custom = cut.custom or {}
    return str(custom.get("output_stem") or cut.recording_id)


def _by_recording(results: Dict[str, AlignResult], cuts) -> Dict[str, Tuple[object, list]]:
    """Recording id -> (a cut of it, [(cut, times shifted to the recording)] in time order); aligned cuts only."""
    groups: Dict[str, list] = defaultdict(list)
    first = {}
    for cut in cuts:
        result = results.get(cut.id)
        if result is None or result.times is None:
            continue
        groups[cut.recording_id].append((cut, result.times.shifted(cut.start)))
        first.setdefault(cut.recording_id, cut)
    return {rec: (first[rec], sorted(items, key=lambda x: x[0].start)) for rec, items in groups.items()}


def recording_tokens(results: Iterable[AlignResult], cuts) -> Dict[str, list]:
    """Recording id -> the token spans of its aligned cuts in recording time, in time order (the token tiers)."""
    recordings = _by_recording({r.cut_id: r for r in results}, list(cuts))
    return {rec: [t for _, times in items for t in times.tokens] for rec, (_, items) in recordings.items()}


def write_corpus_outputs(output_dir: Path, results: Iterable[AlignResult], cuts, token_tier: str = "tokens") -> int:
    """Writes the TextGrids, the CTM and the cut manifest of an aligned corpus.

    Args:
      output_dir: the output folder.
      results: one :class:`~fsalign.aligning.journal.AlignResult` per cut (failed ones are left out).
      cuts: the corpus' cuts (any order; the manifest is written in this order).
      token_tier: "phones" or "tokens".

    Returns:
      The number of TextGrid files written.
    """
    output_dir = Path(output_dir)
    results = {r.cut_id: r for r in results}
    cuts = list(cuts)
    recordings = _by_recording(results, cuts)
    for rec_id, (cut, items) in sorted(recordings.items()):
        path = output_dir / f"{output_stem(cut)}.TextGrid"
        write_recording_textgrid(path, f"recording {rec_id}", cut.recording.duration,
                                 [times for _, times in items], token_tier)
    with atomic_open(output_dir / CTM_NAME, "w", encoding="utf-8", newline="\n") as f:
        for rec_id in sorted(recordings):
            for _, times in recordings[rec_id][1]:
                f.write(format_ctm(UtteranceTimes(rec_id, None, times.words, mismatch=times.mismatch)))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
        for cut in cuts:
            result = results.get(cut.id)
            if result is not None and result.times is not None:
                data = cut_with_alignment(cut, result.times).to_dict()
                data.get("custom", {}).pop("dataloading_info", None)  # what lhotse's samplers add in passing
                line = json.dumps(data, ensure_ascii=False)
                gz.write((line + "\n").encode("utf-8"))
    with atomic_open(output_dir / CUTS_NAME, "wb") as f:
        f.write(buffer.getvalue())
    return len(recordings)
