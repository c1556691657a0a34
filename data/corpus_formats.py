"""Writers for ``make_corpus.py``: LibriSpeech layout, CTM, Praat TextGrid, LibriSpeech alignments.

Output under ``OUT`` (``data/`` for the shipped corpus)::

    OUT/LibriSpeech/SPEAKERS.TXT
    OUT/LibriSpeech/<split>/<spk>/<chap>/<spk>-<chap>-<NNNN>.flac       16 kHz mono FLAC
    OUT/LibriSpeech/<split>/<spk>/<chap>/<spk>-<chap>.trans.txt         "<utt> WORD WORD ..."
    OUT/alignments/<split>.words.ctm, <split>.phones.ctm        "<utt> 1 <start> <dur> <sym>"
    OUT/alignments/<split>.utterances.tsv                               synthesis parameters
    OUT/alignments/<split>/textgrid/<utt>.TextGrid                      tiers "words", "phones"
    OUT/alignments/LibriSpeech/<split>/<spk>/<chap>/<spk>-<chap>.alignment.txt

The last file is the format of CorentinJ/librispeech-alignments that lhotse reads with
``prepare_librispeech(OUT/LibriSpeech, alignments_dir=OUT/alignments/LibriSpeech)``:
``<utt> ",W1,,W2," "e0,e1,e2,e3,e4"``, one entry per word or pause (pause = empty word),
each with its end time; the first entry starts at 0.

Times are in seconds with millisecond resolution; the phones of an utterance tile it from
0 to its duration (``SIL`` for Festival's ``pau``); words carry no pauses.
"""

import dataclasses
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import soundfile
from praatio import textgrid
from praatio.data_classes.interval_tier import IntervalTier

SAMPLE_RATE = 16000
Span = Tuple[str, float, float]  # (label, start seconds, end seconds)


@dataclasses.dataclass
class Utterance:
    """One synthesized utterance with its reference times.

    Attributes:
        split: corpus part, e.g. ``"train-clean-5"``.
        utt_id: ``<speaker>-<chapter>-<NNNN>``.
        speaker_id: LibriSpeech-style numeric speaker id.
        chapter_id: LibriSpeech-style numeric chapter id.
        words: transcript words (upper case).
        samples: int16 array of shape (N,), 16 kHz.
        word_spans: one (word, start, end) per transcript word.
        phone_spans: (phone, start, end) tiling [0, duration], ``SIL`` for pauses.
        meta: synthesis parameters and checks (written to ``<split>.utterances.tsv``).
    """

    split: str
    utt_id: str
    speaker_id: str
    chapter_id: str
    words: Sequence[str]
    samples: np.ndarray
    word_spans: List[Span]
    phone_spans: List[Span]
    meta: Dict[str, object]


def _ctm_lines(utt_id: str, spans: Sequence[Span]) -> List[str]:
    return [f"{utt_id} 1 {start:.3f} {end - start:.3f} {label}\n" for label, start, end in spans]


def librispeech_alignment_line(utt: Utterance) -> str:
    """One line of a ``.alignment.txt`` file: words and pauses with their end times."""
    labels, ends, cursor = [], [], 0.0
    for word, start, end in utt.word_spans:
        if start > cursor:
            labels.append("")
            ends.append(start)
        labels.append(word)
        ends.append(end)
        cursor = end
    duration = utt.meta["duration_s"]
    if duration > cursor:
        labels.append("")
        ends.append(duration)
    return f'{utt.utt_id} "{",".join(labels)}" "{",".join(f"{e:.3f}" for e in ends)}"\n'


def _write_textgrid(utt: Utterance, path: Path) -> None:
    duration = float(utt.meta["duration_s"])
    grid = textgrid.Textgrid()
    grid.addTier(IntervalTier("words", [(s, e, w) for w, s, e in utt.word_spans], 0.0, duration))
    grid.addTier(IntervalTier("phones", [(s, e, p) for p, s, e in utt.phone_spans], 0.0,
                              duration))
    grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)


def _write_speakers(root: Path, speakers: Dict[str, Sequence], voices: Dict[str, object],
                    minutes: Dict[str, float]) -> None:
    lines = [";ID  |SEX| SUBSET           |MINUTES| NAME\n"]
    for split, split_speakers in speakers.items():
        for spk in split_speakers:
            lines.append(f"{spk.speaker_id:<5}| {voices[spk.voice].sex} | {split:<17}| "
                         f"{minutes.get(spk.speaker_id, 0.0):5.2f} | festival-{spk.voice}"
                         f"-timbre{spk.timbre:.2f}\n")
    (root / "SPEAKERS.TXT").write_text("".join(lines))


def write_corpus(out_dir: Path, corpus: Dict[str, List[Utterance]], speakers: Dict[str, Sequence],
                 voices: Dict[str, object]) -> None:
    """Write every split of ``corpus`` under ``out_dir`` (replacing those splits' old files).

    Args:
        out_dir: root that receives ``LibriSpeech/`` and ``alignments/``.
        corpus: split name -> its utterances.
        speakers: split name -> its ``Speaker`` records (for SPEAKERS.TXT).
        voices: voice name -> ``Voice`` record (for the speaker sex).
    """
    corpus_root, ali_root = out_dir / "LibriSpeech", out_dir / "alignments"
    minutes: Dict[str, float] = defaultdict(float)
    for split, utts in corpus.items():
        for stale in (corpus_root / split, ali_root / split, ali_root / "LibriSpeech" / split):
            shutil.rmtree(stale, ignore_errors=True)
        chapters = defaultdict(list)
        for utt in utts:
            chapters[(utt.speaker_id, utt.chapter_id)].append(utt)
            minutes[utt.speaker_id] += utt.meta["duration_s"] / 60.0
        for (spk, chap), chapter_utts in sorted(chapters.items()):
            chapter_utts.sort(key=lambda u: u.utt_id)
            audio_dir = corpus_root / split / spk / chap
            ali_dir = ali_root / "LibriSpeech" / split / spk / chap
            audio_dir.mkdir(parents=True)
            ali_dir.mkdir(parents=True)
            for utt in chapter_utts:
                soundfile.write(str(audio_dir / f"{utt.utt_id}.flac"), utt.samples, SAMPLE_RATE,
                                subtype="PCM_16", format="FLAC", compression_level=1.0)
            (audio_dir / f"{spk}-{chap}.trans.txt").write_text(
                "".join(f"{u.utt_id} {' '.join(u.words)}\n" for u in chapter_utts))
            (ali_dir / f"{spk}-{chap}.alignment.txt").write_text(
                "".join(librispeech_alignment_line(u) for u in chapter_utts))
        ordered = sorted(utts, key=lambda u: u.utt_id)
        (ali_root / split / "textgrid").mkdir(parents=True)
        for utt in ordered:
            _write_textgrid(utt, ali_root / split / "textgrid" / f"{utt.utt_id}.TextGrid")
        with open(ali_root / f"{split}.words.ctm", "w") as words_ctm, \
                open(ali_root / f"{split}.phones.ctm", "w") as phones_ctm:
            for utt in ordered:
                words_ctm.writelines(_ctm_lines(utt.utt_id, utt.word_spans))
                phones_ctm.writelines(_ctm_lines(utt.utt_id, utt.phone_spans))
        columns = ["utt_id", "speaker"] + list(ordered[0].meta)
        with open(ali_root / f"{split}.utterances.tsv", "w") as tsv:
            tsv.write("\t".join(columns) + "\n")
            for utt in ordered:
                tsv.write("\t".join([utt.utt_id, utt.speaker_id]
                                    + [str(utt.meta[c]) for c in columns[2:]]) + "\n")
    _write_speakers(corpus_root, speakers, voices, minutes)
