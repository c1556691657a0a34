#!/usr/bin/env python3
"""Lay the shipped corpus out as a Montreal Forced Aligner user keeps a corpus: ``data/mfa_example/``.

Reads ``data/LibriSpeech`` (audio) and ``data/alignments/<part>.utterances.tsv`` (the sentences as
written) and ``<part>.words.ctm`` (where the speech is, for the TextGrid transcripts); writes::

    data/mfa_example/<speaker>/<utterance id>.{flac,wav,mp3,ogg,opus}
    data/mfa_example/<speaker>/<utterance id>.{lab,txt,TextGrid}
    data/mfa_example/README.md

One folder for both parts (the speakers of ``dev-clean-2`` are listed in the README). Audio: a
fixed mix of formats and sample rates (``FORMATS``), resampled from the 16 kHz originals with
torchaudio; the two shortest utterances become 44.1 kHz stereo WAV. Lossy files are checked to
decode to the source's length with no time shift, so the shipped reference times
(``data/alignments/*.ctm``, keyed by the same ids) score alignments of the example directly.
Transcripts: sentence case with punctuation, some numbers written as digits (``EDITS``), a few
quotes; checked to read back to the shipped LibriSpeech transcript words after upper-casing,
dropping punctuation and spelling digits out with num2words. ``.lab`` for most speakers, ``.txt``
(some on two lines) for ``TXT_SPEAKERS``, and for ``TEXTGRID_SPEAKER`` a TextGrid with one interval
tier named after the speaker holding one interval from 0.2 s before the first word to 0.2 s after
the last.

Byte-reproducible: every choice is fixed or drawn from ``numpy.random.default_rng(0)``, and the
random stream serial number libsndfile gives every Ogg file is replaced by one derived from the
utterance id (with the page checksums redone). Run: ``python data/make_mfa_example.py``
(about 30 s on 2 CPU cores; needs num2words).
"""
import argparse
import re
import shutil
import zlib
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile
import torch
import torchaudio
from num2words import num2words
from praatio import textgrid
from praatio.data_classes.interval_tier import IntervalTier

DATA = Path(__file__).resolve().parent
PARTS = ("train-clean-5", "dev-clean-2")
SOURCE_RATE = 16000
# (name, how many, suffix, sample rate, channels, soundfile arguments); the rest of the corpus is "ogg16"
FORMATS = [
    ("wav44-stereo", 2, ".wav", 44100, 2, dict(format="WAV", subtype="PCM_16")),
    ("flac16", 48, ".flac", 16000, 1, dict(format="FLAC", subtype="PCM_16", compression_level=1.0)),
    ("wav22", 4, ".wav", 22050, 1, dict(format="WAV", subtype="PCM_16")),
    ("wav8", 4, ".wav", 8000, 1, dict(format="WAV", subtype="PCM_16")),
    ("mp3-22", 60, ".mp3", 22050, 1, dict(format="MP3", subtype="MPEG_LAYER_III", compression_level=0.7)),
    ("mp3-16", 60, ".mp3", 16000, 1, dict(format="MP3", subtype="MPEG_LAYER_III", compression_level=0.7)),
    ("opus16", 24, ".opus", 16000, 1, dict(format="OGG", subtype="OPUS")),
    ("ogg24", 60, ".ogg", 24000, 1, dict(format="OGG", subtype="VORBIS", compression_level=0.9)),
    ("ogg16", None, ".ogg", 16000, 1, dict(format="OGG", subtype="VORBIS", compression_level=0.9)),
]
TEXTGRID_SPEAKER = "2201"
TXT_SPEAKERS = ("1102", "3201")
SPEECH_MARGIN_S = 0.2
# utterance id -> (written text, replacement): digits where num2words reads them back exactly, and quotes
EDITS = {
    "1201-12011-0001": [("about one foot", "about 1 foot")],
    "1101-11011-0013": [("think Mary Jane is", 'think "Mary Jane" is')],
    "1101-11011-0041": [("between two fools", "between 2 fools")],
    "1101-11011-0050": [("the second envelope", "the 2nd envelope")],
    "1101-11011-0053": [("are two types", "are 2 types")],
    "1102-11021-0038": [("No, I said he", '"No," I said, "he'), ("region.", 'region."')],
    "1102-11021-0047": [("The first rule", "The 1st rule")],
    "1102-11021-0052": [("Any two philosophers", "Any 2 philosophers"), ("in two hours", "in 2 hours")],
    "2101-21011-0002": [("over and over again.", '"over and over again."')],
    "2102-21021-0009": [("the second floor", "the 2nd floor")],
    "2102-21021-0044": [("ten percent", "10 percent")],
    "3102-31021-0007": [("Ten weeks", "10 weeks")],
    "3102-31021-0027": [("ten percent", "10 percent"), ("fifty percent", "50 percent")],
    "3102-31021-0040": [("only two days", "only 2 days")],
}


def spoken_words(text: str) -> List[str]:
    """Upper-case words of a written transcript: punctuation dropped, ``42`` and ``3rd`` spelt out."""
    words = []
    for token in re.sub(r"[^\w' ]+", " ", text).split():
        number = re.fullmatch(r"(\d+)(st|nd|rd|th)?", token)
        if number:
            token = num2words(int(number.group(1)), to="ordinal" if number.group(2) else "cardinal")
        words += token.replace("-", " ").replace(",", "").upper().split()
    return words


def read_utterances() -> Dict[str, dict]:
    """Utterance id -> part, speaker, audio path, transcript words, written text, first/last word times."""
    utts: Dict[str, dict] = {}
    for part in PARTS:
        for trans in sorted((DATA / "LibriSpeech" / part).glob("*/*/*.trans.txt")):
            for line in trans.read_text().splitlines():
                utt, words = line.split(maxsplit=1)
                utts[utt] = dict(part=part, speaker=utt.split("-")[0], words=words.split(),
                                 audio=trans.parent / f"{utt}.flac", spans=[])
        rows = (DATA / "alignments" / f"{part}.utterances.tsv").read_text().splitlines()
        header = rows[0].split("\t")
        for row in rows[1:]:
            fields = dict(zip(header, row.split("\t")))
            utts[fields["utt_id"]]["text"] = fields["text"]
        for line in (DATA / "alignments" / f"{part}.words.ctm").read_text().splitlines():
            utt, _, start, dur, _ = line.split()
            utts[utt]["spans"].append((float(start), float(start) + float(dur)))
    for utt, edits in EDITS.items():
        for old, new in edits:
            if utts[utt]["text"].count(old) != 1:
                raise SystemExit(f"{utt}: {old!r} should occur once in {utts[utt]['text']!r}")
            utts[utt]["text"] = utts[utt]["text"].replace(old, new)
    for utt, info in utts.items():
        if spoken_words(info["text"]) != info["words"]:
            raise SystemExit(f"{utt}: {info['text']!r} does not read back to {' '.join(info['words'])}")
    return utts


def _crc_table() -> List[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return table


CRC_TABLE = _crc_table()


def ogg_crc(page: bytes) -> int:
    """The Ogg page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, initial value 0)."""
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ CRC_TABLE[(crc >> 24) ^ byte]
    return crc


def fix_ogg_serial(data: bytes, serial: int) -> bytes:
    """``data`` (an Ogg file with one logical stream) with every page's serial number set to ``serial``."""
    out, offset = bytearray(data), 0
    while offset < len(out):
        if out[offset:offset + 4] != b"OggS":
            raise SystemExit("not an Ogg page")
        segments = out[offset + 26]
        end = offset + 27 + segments + sum(out[offset + 27:offset + 27 + segments])
        out[offset + 14:offset + 18] = serial.to_bytes(4, "little")
        out[offset + 22:offset + 26] = bytes(4)
        out[offset + 22:offset + 26] = ogg_crc(bytes(out[offset:end])).to_bytes(4, "little")
        offset = end
    return bytes(out)


def assign_formats(utts: Dict[str, dict]) -> Dict[str, tuple]:
    """Utterance id -> its FORMATS entry: stereo for the two shortest, the rest by a seeded permutation."""
    by_length = sorted(utts, key=lambda u: (soundfile.info(str(utts[u]["audio"])).frames, u))
    chosen = {u: FORMATS[0] for u in by_length[:FORMATS[0][1]]}
    rest = [u for u in sorted(utts) if u not in chosen]
    order = [rest[k] for k in np.random.default_rng(0).permutation(len(rest))]
    start = 0
    for entry in FORMATS[1:]:
        count = entry[1] if entry[1] is not None else len(order) - start
        chosen.update({u: entry for u in order[start:start + count]})
        start += count
    return chosen


def write_audio(utt: str, source: Path, target: Path, entry: tuple) -> None:
    """Resamples ``source`` to the entry's rate and channels, encodes it, and checks it decodes in place."""
    _, _, _, rate, channels, options = entry
    samples, _ = soundfile.read(str(source), dtype="float32")
    audio = samples if rate == SOURCE_RATE else torchaudio.functional.resample(
        torch.from_numpy(samples), SOURCE_RATE, rate).numpy()
    audio = np.clip(audio, -1.0, 1.0)
    if channels == 2:
        audio = np.stack([audio, 0.7 * audio], axis=1)  # the right channel 3 dB down
    soundfile.write(str(target), audio, rate, **options)
    if options["format"] == "OGG":
        target.write_bytes(fix_ogg_serial(target.read_bytes(), zlib.crc32(utt.encode())))
    decoded, decoded_rate = soundfile.read(str(target), dtype="float32", always_2d=True)
    reference = audio.reshape(len(audio), -1)[:, 0]
    if decoded_rate != rate or abs(len(decoded) - len(reference)) > 1:
        raise SystemExit(f"{target}: decodes to {len(decoded)} samples at {decoded_rate} Hz, "
                         f"expected {len(reference)} at {rate}")
    n = min(len(decoded), len(reference)) - 200
    lags = range(-100, 101)
    best = max(lags, key=lambda lag: float(np.dot(reference[100:n], decoded[100 + lag:n + lag, 0])))
    if best != 0:
        raise SystemExit(f"{target}: decoded audio is shifted by {best} samples")


def write_transcript(utt: str, info: dict, folder: Path, index: int) -> str:
    """Writes the transcript file; returns its suffix."""
    text = info["text"]
    if info["speaker"] == TEXTGRID_SPEAKER:
        duration = soundfile.info(str(info["audio"])).duration
        start = round(max(0.0, info["spans"][0][0] - SPEECH_MARGIN_S), 3)
        end = round(min(duration, info["spans"][-1][1] + SPEECH_MARGIN_S), 3)
        grid = textgrid.Textgrid()
        grid.addTier(IntervalTier(info["speaker"], [(start, end, text)], 0.0, duration))
        grid.save(str(folder / f"{utt}.TextGrid"), format="long_textgrid", includeBlankSpaces=True)
        return ".TextGrid"
    if info["speaker"] in TXT_SPEAKERS:
        if index % 2 == 1:  # every other one on two lines, broken after its first comma or in the middle
            words = text.split()
            cut = next((k + 1 for k, w in enumerate(words[:-1]) if w.endswith(",")), len(words) // 2)
            text = " ".join(words[:cut]) + "\n" + " ".join(words[cut:])
        (folder / f"{utt}.txt").write_text(text + "\n", encoding="utf-8")
        return ".txt"
    (folder / f"{utt}.lab").write_text(text + "\n", encoding="utf-8")
    return ".lab"


def write_readme(out: Path, utts: Dict[str, dict], formats: Dict[str, tuple], kinds: Dict[str, str]) -> None:
    """README.md: what the example is, how it was made, and per speaker what is where."""
    rows = []
    for speaker in sorted({i["speaker"] for i in utts.values()}):
        mine = sorted(u for u in utts if utts[u]["speaker"] == speaker)
        counts = {name: sum(formats[u][0] == name for u in mine) for name, *_ in FORMATS}
        rows.append(f"| `{speaker}/` | {utts[mine[0]]['part']} | {len(mine)} | {kinds[mine[0]]} | "
                    + ", ".join(f"{n} {name}" for name, n in counts.items() if n) + " |")
    totals = "\n".join(f"* {name}: {sum(f[0] == name for f in formats.values())} `{suffix}` files, {rate} Hz"
                        f"{', stereo' if channels == 2 else ''} ({options['format']} {options['subtype']})"
                        for name, _, suffix, rate, channels, options in FORMATS)
    (out / "README.md").write_text(f"""# The shipped corpus as an MFA user would have it

The {len(utts)} utterances of `data/LibriSpeech` (`train-clean-5` and `dev-clean-2`, 9 speakers) in
the Montreal Forced Aligner corpus layout: one folder per speaker, each audio file with a
transcript of the same stem beside it. Made by `data/make_mfa_example.py` (byte-reproducible);
nothing in it is hand-edited. File stems are the shipped utterance ids, so the reference times in
`data/alignments/*.words.ctm` and `*.phones.ctm` (seconds from the start of each file) score an
alignment of this folder directly.

Audio, resampled from the 16 kHz originals (the stereo files' right channel 3 dB below the left;
the lossy files decode to the original length with no shift):

{totals}

Transcripts: sentence case with punctuation as the sentences were written, a few quotes, and
numbers as digits where they read back exactly (`1 foot`, `2nd floor`, `10 percent`); `.lab` files,
`.txt` files (every other one on two lines) and, for speaker {TEXTGRID_SPEAKER}, TextGrids with one interval
tier named after the speaker holding one interval from {SPEECH_MARGIN_S} s before the first word to
{SPEECH_MARGIN_S} s after the last. Upper-cased, without punctuation and with the digits spelt out
(num2words) they are the words of the LibriSpeech transcripts.

| folder | part | files | transcripts | audio |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n", encoding="utf-8")


def main() -> None:
    """Writes the example corpus (replacing an old one)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=DATA / "mfa_example")
    args = parser.parse_args()
    torch.set_num_threads(1)
    utts = read_utterances()
    formats = assign_formats(utts)
    shutil.rmtree(args.output_dir, ignore_errors=True)
    kinds: Dict[str, str] = {}
    for index, utt in enumerate(sorted(utts)):
        info = utts[utt]
        folder = args.output_dir / info["speaker"]
        folder.mkdir(parents=True, exist_ok=True)
        write_audio(utt, info["audio"], folder / f"{utt}{formats[utt][2]}", formats[utt])
        kinds[utt] = write_transcript(utt, info, folder, index)
    write_readme(args.output_dir, utts, formats, kinds)


if __name__ == "__main__":
    main()
