#!/usr/bin/env python3
"""Synthesize fsalign's small LibriSpeech-layout corpus with Festival, with true word/phone times.

Needs Debian's Festival (only to regenerate; the shipped data in ``data/`` does not)::

    apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \\
        festlex-cmu festlex-poslex fortunes fortunes-min
    python data/make_corpus.py                                  # rebuilds data/ (seed 0)
    python data/make_corpus.py --seed 7 --text-source template --output-dir /tmp/corpus7

Per utterance (all random choices come from ``numpy.random.default_rng((seed, split,
slot, attempt))``, so a run is reproducible):

1. Festival runs the front end step by step (Initialize, Text, Token_POS, Token, POS,
   Phrasify, Word, Pauses, Intonation, PostLex, Duration) with a per-utterance
   ``Duration_Stretch`` (speaking rate) and, for the diphone voices, a per-utterance F0
   mean and range (``int_lr_params``).
2. Diphone voices (kal, ked): every Segment's duration (pauses included) is multiplied by
   its own log-normal factor *before* ``Int_Targets`` + ``Wave_Synth``, so the waveform is
   made to the perturbed times. The HTS voice (slt) cannot take imposed times in Debian's
   Festival (its hts_engine ignores label times); its phone durations come from the HTS
   duration model at a per-utterance speed ``-r``, and Festival writes the generated times
   back into the Segment relation.
3. The Word and Segment relations are dumped; the audio is resampled by a per-speaker
   "timbre" factor (pitch and formants move together, every time is divided by the factor
   exactly), peak-normalised, padded to a whole millisecond and written as 16 kHz FLAC.
4. Checks: Festival's words equal the transcript, the last segment ends within 50 ms of the
   audio end (the final pause is then stretched to the audio end), 2 s <= duration <= 8 s,
   and every pause longer than 80 ms is quiet: its interior (25 ms trimmed per side) must
   stay below ``--max-pause-db`` (-28 dB re the speech RMS; ``loudest_pause_db`` in the
   metadata). Festival's separate possessive ``'s`` words are glued back onto their word.
   A failing sentence is replaced by the next unused one.
"""

import argparse
import concurrent.futures
import dataclasses
import logging
import math
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile
import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_formats import Utterance, write_corpus  # noqa: E402
from corpus_text import Sentence, load_sentences  # noqa: E402

logger = logging.getLogger("make_corpus")

SAMPLE_RATE = 16000
SPLITS = ("train-clean-5", "dev-clean-2")  # mini-LibriSpeech names lhotse recognises
MAX_ATTEMPTS = 8

# Festival's "radio" phone set -> CMU/ARPAbet without stress. The CMU lexicon only produces
# the 39 CMU phones plus ``ax``; the rest are listed so that nothing is silently dropped.
RADIO_TO_ARPABET = {
    "aa": "AA", "ae": "AE", "ah": "AH", "ao": "AO", "aw": "AW", "ax": "AH", "axr": "ER",
    "ay": "AY", "b": "B", "ch": "CH", "d": "D", "dh": "DH", "dx": "T", "eh": "EH",
    "el": "L", "em": "M", "en": "N", "er": "ER", "ey": "EY", "f": "F", "g": "G",
    "hh": "HH", "hv": "HH", "ih": "IH", "iy": "IY", "jh": "JH", "k": "K", "l": "L",
    "m": "M", "n": "N", "nx": "N", "ng": "NG", "ow": "OW", "oy": "OY", "p": "P", "r": "R",
    "s": "S", "sh": "SH", "t": "T", "th": "TH", "uh": "UH", "uw": "UW", "v": "V", "w": "W",
    "y": "Y", "z": "Z", "zh": "ZH", "pau": "SIL", "brth": "SIL",
}


@dataclasses.dataclass(frozen=True)
class Voice:
    """A Festival voice: ``engine`` is ``"diphone"`` (imposed times) or ``"hts"``."""

    festival: str
    engine: str
    sex: str
    default_stretch: float = 1.0
    hts_speed: float = 1.0


VOICES = {
    "kal": Voice("voice_kal_diphone", "diphone", "M", default_stretch=1.1),
    "ked": Voice("voice_ked_diphone", "diphone", "M", default_stretch=1.1),
    "slt": Voice("voice_cmu_us_slt_arctic_hts", "hts", "F", hts_speed=0.9),
}


@dataclasses.dataclass(frozen=True)
class Speaker:
    """A "speaker": a voice with its own F0 (diphone only), timbre factor and base rate."""

    speaker_id: str
    chapter_id: str
    voice: str
    f0_mean: float
    f0_std: float
    timbre: float
    rate: float


SPEAKERS = {
    "train-clean-5": (
        Speaker("1101", "11011", "kal", 105.0, 14.0, 1.00, 1.00),
        Speaker("1102", "11021", "kal", 125.0, 20.0, 1.06, 0.92),
        Speaker("2101", "21011", "ked", 100.0, 15.0, 1.00, 1.05),
        Speaker("2102", "21021", "ked", 90.0, 10.0, 0.95, 1.12),
        Speaker("3101", "31011", "slt", 0.0, 0.0, 1.00, 1.00),
        Speaker("3102", "31021", "slt", 0.0, 0.0, 0.90, 1.08),
    ),
    "dev-clean-2": (
        Speaker("1201", "12011", "kal", 115.0, 18.0, 1.03, 1.08),
        Speaker("2201", "22011", "ked", 110.0, 22.0, 0.97, 0.95),
        Speaker("3201", "32011", "slt", 0.0, 0.0, 1.05, 0.95),
    ),
}


@dataclasses.dataclass
class Plan:
    """Everything one synthesis attempt needs (all random draws made up front)."""

    split: str
    utt_id: str
    speaker: Speaker
    sentence: Sentence
    attempt: int
    stretch: float
    f0_mean: float
    f0_std: float
    timbre: float
    phone_sigma: float
    gain_db: float
    factors: List[float]


def make_plan(split: str, slot: int, attempt: int, utt_id: str, speaker: Speaker,
              sentence: Sentence, seed: int, phone_sigma: float) -> Plan:
    """Draw the random parameters of one attempt (deterministic in its arguments)."""
    rng = np.random.default_rng((seed, SPLITS.index(split), slot, attempt))
    stretch = speaker.rate * math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    f0_mean = speaker.f0_mean * rng.uniform(0.9, 1.12)
    f0_std = speaker.f0_std * rng.uniform(0.7, 1.4)
    timbre = speaker.timbre * rng.uniform(0.98, 1.02)
    gain_db = rng.uniform(-10.0, -3.0)
    sigma = phone_sigma if VOICES[speaker.voice].engine == "diphone" else 0.0
    factors = np.clip(rng.lognormal(0.0, max(sigma, 1e-9), size=400), 0.55, 1.8)
    return Plan(split, utt_id, speaker, sentence, attempt, stretch, f0_mean, f0_std, timbre,
                sigma, gain_db, [round(float(f), 4) for f in factors])


def festival_script(plan: Plan, wav_path: Path, dump_path: Path) -> str:
    """Scheme program: front end, duration perturbation, waveform, dump of Word/Segment."""
    voice = VOICES[plan.speaker.voice]
    if voice.engine == "diphone":
        setup = (f"(Parameter.set 'Duration_Stretch {voice.default_stretch * plan.stretch:.4f})\n"
                 f"(set! int_lr_params (append (list (list 'target_f0_mean {plan.f0_mean:.2f})"
                 f" (list 'target_f0_std {plan.f0_std:.2f})) int_lr_params))\n")
        perturb = f"(fsa_perturb utt '({' '.join(map(str, plan.factors))}))\n"
    else:
        setup = (f"(set! hts_engine_params (cons (list \"-r\" "
                 f"{voice.hts_speed / plan.stretch:.4f}) hts_engine_params))\n")
        perturb = ""
    return f"""({voice.festival})
{setup}
(define (fsa_perturb utt factors)
  (let ((prev 0.0) (shifted 0.0) (end 0.0))
    (mapcar
     (lambda (seg)
       (set! end (item.feat seg "end"))
       (set! shifted (+ shifted (* (car factors) (- end prev))))
       (set! factors (cdr factors))
       (set! prev end)
       (item.set_feat seg "end" shifted))
     (utt.relation.items utt 'Segment))))
(set! utt (Utterance Text "{plan.sentence.festival_text}"))
(mapcar (lambda (module) (module utt))
        (list Initialize Text Token_POS Token POS Phrasify Word Pauses Intonation PostLex
              Duration))
{perturb}(Int_Targets utt)
(Wave_Synth utt)
(utt.save.wave utt "{wav_path}" 'riff)
(set! fd (fopen "{dump_path}" "w"))
(set! widx 0)
(mapcar (lambda (w)
          (set! widx (+ widx 1))
          (item.set_feat w "fsa_widx" widx)
          (format fd "WORD %d %s\\n" widx (item.name w)))
        (utt.relation.items utt 'Word))
(mapcar (lambda (s)
          (format fd "SEG %s %.6f %s\\n" (item.name s) (item.feat s "end")
                  (item.feat s "R:SylStructure.parent.parent.fsa_widx")))
        (utt.relation.items utt 'Segment))
(fclose fd)
"""


def _parse_dump(text: str) -> Tuple[List[str], List[Tuple[str, float, int]]]:
    words, segments = [], []
    for line in text.splitlines():
        fields = line.split()
        if fields[0] == "WORD":
            words.append(fields[2])
        elif fields[0] == "SEG":
            segments.append((fields[1], float(fields[2]), int(fields[3])))
    return words, segments


def _loudest_pause_db(audio: np.ndarray, phones: List[Tuple[str, float, float]]) -> float:
    """Level (dB) of the loudest pause interior (25 ms trimmed per side) re. speech RMS."""
    def rms(a: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))) if a.size else 0.0

    speech = np.concatenate([audio[int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)]
                             for p, s, e in phones if p != "SIL"])
    ref = max(rms(speech), 1e-9)
    levels = [rms(audio[int((s + 0.025) * SAMPLE_RATE):int((e - 0.025) * SAMPLE_RATE)])
              for p, s, e in phones if p == "SIL" and e - s > 0.08]
    return 20.0 * math.log10(max(max(levels, default=0.0), 1e-9) / ref)


def _merge_possessives(names: List[str]) -> Tuple[List[str], Dict[int, int]]:
    """Glue Festival's separate ``'s`` words back onto their word (``dean 's`` -> ``DEAN'S``).

    Returns:
        The merged upper-case words and a map from Festival's 1-based word index to the
        0-based index of the merged word.
    """
    merged: List[str] = []
    index: Dict[int, int] = {}
    for widx, name in enumerate(names, start=1):
        if name.lower() == "'s" and merged:
            merged[-1] += "'S"
        else:
            merged.append(name.upper())
        index[widx] = len(merged) - 1
    return merged, index


def synthesize(plan: Plan, festival: str, min_s: float, max_s: float, max_pause_db: float
               ) -> Tuple[Optional[Utterance], str]:
    """Run one attempt; return the utterance or ``None`` with the reason it was rejected."""
    with tempfile.TemporaryDirectory(prefix="fsalign_corpus_") as tmp:
        wav_path, dump_path = Path(tmp) / "utt.wav", Path(tmp) / "utt.txt"
        scm = Path(tmp) / "utt.scm"
        scm.write_text(festival_script(plan, wav_path, dump_path))
        proc = subprocess.run([festival, "-b", str(scm)], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0 or not dump_path.is_file() or "mismatch" in proc.stderr:
            return None, f"festival failed: {proc.stderr.strip()[-200:]}"
        names, segments = _parse_dump(dump_path.read_text())
        audio, rate = soundfile.read(str(wav_path), dtype="float32")
    merged, word_index = _merge_possessives(names)
    if merged != list(plan.sentence.words):
        return None, "word mismatch: Festival read different words"
    end_gap = len(audio) / rate - segments[-1][1]
    if abs(end_gap) > 0.05 or segments[-1][0] != "pau":
        return None, f"end gap: last segment ends {end_gap:+.3f} s from the audio end"
    # Timbre: play the waveform at rate*timbre and resample to 16 kHz (times / timbre).
    source_rate = int(round(rate * plan.timbre / 100.0)) * 100
    timbre = source_rate / rate
    wave = torchaudio.functional.resample(torch.from_numpy(audio), source_rate, SAMPLE_RATE)
    wave = wave.numpy().astype(np.float64)
    wave = np.pad(wave, (0, -len(wave) % (SAMPLE_RATE // 1000)))
    duration = len(wave) / SAMPLE_RATE
    if not min_s <= duration <= max_s:
        return None, f"duration: {duration:.2f} s outside [{min_s}, {max_s}]"
    ends = [round(end / timbre, 3) for _, end, _ in segments[:-1]] + [duration]
    phones, words, start = [], [], 0.0
    for (name, _, widx), end in zip(segments, ends):
        if end - start < 0.005:
            return None, f"short segment: {name} shorter than 5 ms"
        phones.append((RADIO_TO_ARPABET[name], start, end))
        if widx > 0:
            if len(words) <= word_index[widx]:
                words.append([merged[word_index[widx]], start, end])
            words[word_index[widx]][2] = end
        start = end
    if len(words) != len(merged):
        return None, "no segments: a word has no segments"
    pause_db = _loudest_pause_db(wave, phones)
    if pause_db > max_pause_db:
        return None, f"loud pause: a pause interior is at {pause_db:.1f} dB re speech"
    peak = max(float(np.max(np.abs(wave))), 1e-9)
    wave = wave / peak * 10.0 ** (plan.gain_db / 20.0)
    samples = np.round(wave * 32767.0).astype(np.int16)
    meta = {
        "voice": plan.speaker.voice, "engine": VOICES[plan.speaker.voice].engine,
        "stretch": round(plan.stretch, 4), "f0_mean": round(plan.f0_mean, 1),
        "f0_std": round(plan.f0_std, 1), "timbre": round(timbre, 5),
        "phone_sigma": plan.phone_sigma, "gain_db": round(plan.gain_db, 2),
        "duration_s": duration, "end_gap_s": round(end_gap, 4), "attempt": plan.attempt,
        "loudest_pause_db": round(pause_db, 1),
        "text": plan.sentence.festival_text,
    }
    if VOICES[plan.speaker.voice].engine == "hts":
        meta["f0_mean"] = meta["f0_std"] = 0.0  # HTS makes its own F0
    return Utterance(plan.split, plan.utt_id, plan.speaker.speaker_id, plan.speaker.chapter_id,
                     plan.sentence.words, samples, [tuple(w) for w in words], phones, meta), ""


def synthesize_split(split: str, count: int, pool: List[Sentence], args: argparse.Namespace
                     ) -> List[Utterance]:
    """Synthesize ``count`` utterances of ``split``, replacing rejected sentences in order."""
    speakers = SPEAKERS[split]
    next_sentence = iter(pool)
    slots = []
    for slot in range(count):
        speaker = speakers[slot % len(speakers)]
        utt_id = f"{speaker.speaker_id}-{speaker.chapter_id}-{slot // len(speakers):04d}"
        slots.append([slot, utt_id, speaker, 0])
    results: Dict[int, Utterance] = {}
    reasons: Counter = Counter()
    pending = slots
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool_exec:
        while pending:
            plans = []
            for slot, utt_id, speaker, attempt in pending:
                sentence = next(next_sentence, None)
                if sentence is None:
                    raise RuntimeError(f"{split}: sentence pool exhausted; use more text")
                plans.append(make_plan(split, slot, attempt, utt_id, speaker, sentence,
                                       args.seed, args.phone_sigma))
            outcomes = list(pool_exec.map(
                lambda p: synthesize(p, args.festival, args.min_duration, args.max_duration,
                                     args.max_pause_db),
                plans))
            plan_text = {slot_entry[0]: plan.sentence.festival_text
                         for slot_entry, plan in zip(pending, plans)}
            retry = []
            for entry, (utt, reason) in zip(pending, outcomes):
                if utt is not None:
                    results[entry[0]] = utt
                    continue
                reasons[reason.split(":")[0]] += 1
                logger.debug("%s attempt %d rejected: %s (%s)", entry[1], entry[3], reason,
                             plan_text[entry[0]])
                entry[3] += 1
                if entry[3] >= MAX_ATTEMPTS:
                    raise RuntimeError(f"{entry[1]}: {MAX_ATTEMPTS} attempts failed ({reason})")
                retry.append(entry)
            logger.info("%s: %d/%d done, %d to retry", split, len(results), count, len(retry))
            pending = retry
    if reasons:
        logger.info("%s: rejected attempts by reason: %s", split, dict(reasons))
    return [results[slot] for slot in range(count)]


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent,
                        help="writes LibriSpeech/ and alignments/ here (default: data/)")
    parser.add_argument("--num-train", type=int, default=320)
    parser.add_argument("--num-dev", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-source", default="fortune",
                        help="fortune | template | file:PATH (see corpus_text.py)")
    parser.add_argument("--phone-sigma", type=float, default=0.25,
                        help="std of the log duration factor per segment (diphone voices)")
    parser.add_argument("--min-duration", type=float, default=2.0)
    parser.add_argument("--max-duration", type=float, default=8.0)
    parser.add_argument("--max-pause-db", type=float, default=-28.0,
                        help="reject an utterance whose loudest pause interior is louder (dB "
                             "re speech RMS); Festival's kal pau-w diphone carries voicing")
    parser.add_argument("--jobs", type=int, default=2, help="parallel Festival processes")
    parser.add_argument("--festival", default="festival", help="Festival binary")
    parser.add_argument("--verbose", action="store_true", help="log every rejected attempt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    began = time.time()
    sentences = load_sentences(args.text_source, args.seed, min_phones=16, max_phones=52)
    dev_pool_size = args.num_dev * MAX_ATTEMPTS
    pools = {"dev-clean-2": sentences[:dev_pool_size], "train-clean-5": sentences[dev_pool_size:]}
    counts = {"train-clean-5": args.num_train, "dev-clean-2": args.num_dev}
    corpus = {split: synthesize_split(split, counts[split], pools[split], args)
              for split in SPLITS if counts[split] > 0}
    write_corpus(args.output_dir, corpus, {s: SPEAKERS[s] for s in corpus}, VOICES)
    for split, utts in corpus.items():
        durations = [u.meta["duration_s"] for u in utts]
        logger.info("%s: %d utterances, %.1f min, %.2f-%.2f s", split, len(utts),
                    sum(durations) / 60.0, min(durations), max(durations))
    logger.info("done in %.0f s", time.time() - began)


if __name__ == "__main__":
    main()
