"""Corpus layouts -> lhotse cuts (fsalign.corpus.layouts), on small corpora made in tmp_path from the shipped audio.

References are independent of the loaders: the files written here (texts, TextGrid intervals,
Kaldi segments), soundfile's headers and samples, and the shipped LibriSpeech transcripts.
"""
import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from lhotse import CutSet, Fbank, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from praatio import textgrid
from praatio.data_classes.interval_tier import IntervalTier

from fsalign.corpus.layouts import detect_layout, load_corpus
from fsalign.errors import FsalignError

DATA = Path(__file__).resolve().parents[2] / "data"
DEV = DATA / "LibriSpeech" / "dev-clean-2"
UTTS = ["1201-12011-0000", "1201-12011-0001", "2201-22011-0000", "2201-22011-0001", "3201-32011-0000"]
SOURCE = {u: DEV / u.split("-")[0] / u.split("-")[1] / f"{u}.flac" for u in UTTS}
# (suffix, sample rate, channels, soundfile arguments): every audio format the loader accepts
FORMATS = {
    "wav8k": (".wav", 8000, 1, dict(format="WAV", subtype="PCM_16")),
    "wav44k-stereo": (".wav", 44100, 2, dict(format="WAV", subtype="PCM_16")),
    "flac": (".flac", 16000, 1, dict(format="FLAC")),
    "mp3": (".mp3", 22050, 1, dict(format="MP3", subtype="MPEG_LAYER_III")),
    "ogg": (".ogg", 32000, 1, dict(format="OGG", subtype="VORBIS")),
    "opus": (".opus", 48000, 1, dict(format="OGG", subtype="OPUS")),
}


def convert(utt: str, target: Path, fmt: str = "flac", seconds: float = None) -> Path:
    """Writes the shipped utterance ``utt`` to ``target`` (suffix added) in the format ``fmt``."""
    suffix, rate, channels, options = FORMATS[fmt]
    samples, source_rate = soundfile.read(str(SOURCE[utt]), dtype="float32")
    if seconds is not None:
        samples = samples[: int(seconds * source_rate)]
    if rate != source_rate:
        samples = torchaudio.functional.resample(torch.from_numpy(samples), source_rate, rate).numpy()
    if channels == 2:
        samples = np.stack([samples, 0.25 * samples], axis=1)
    target = target.with_name(target.name + suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(target), np.clip(samples, -1, 1), rate, **options)
    return target


def write_textgrid(path: Path, duration: float, tiers: dict) -> None:
    grid = textgrid.Textgrid()
    for name, intervals in tiers.items():
        grid.addTier(IntervalTier(name, intervals, 0.0, duration))
    grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)


@pytest.fixture
def mfa(tmp_path):
    """An MFA corpus: two speaker folders, a file in the root, one TextGrid, and one file of each problem."""
    root = tmp_path / "corpus"
    a = convert(UTTS[0], root / "anna" / "u1", "wav8k")
    (root / "anna" / "u1.lab").write_text("On the other hand, if he were\nalready in... 42!\n")
    convert(UTTS[1], root / "anna" / "u2", "flac")
    (root / "anna" / "u2.txt").write_text("  The machine comprised a box.  ")
    tg = convert(UTTS[2], root / "bert" / "u3", "mp3")
    duration = soundfile.info(str(tg)).duration
    write_textgrid(root / "bert" / "u3.TextGrid", duration,
                   {"carl": [(0.25, 1.0, "first part,"), (1.5, 2.25, "second")], "dora": [(1.125, 1.375, "overlap")]})
    convert(UTTS[3], root / "u4", "ogg")
    (root / "u4.lab").write_text("Root level file.")
    convert(UTTS[4], root / "bert" / "stereo", "wav44k-stereo", seconds=1.0)
    (root / "bert" / "stereo.lab").write_text("Stereo words")
    # problems
    convert(UTTS[0], root / "anna" / "no_text", "wav8k", seconds=0.5)
    (root / "anna" / "orphan.lab").write_text("no audio for me")
    convert(UTTS[0], root / "anna" / "empty", "flac", seconds=0.5)
    (root / "anna" / "empty.lab").write_text(" \n \n")
    (root / "anna" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk" + bytes(100))
    (root / "anna" / "corrupt.lab").write_text("never read")
    blank = convert(UTTS[0], root / "bert" / "blank", "flac", seconds=0.5)
    write_textgrid(root / "bert" / "blank.TextGrid", soundfile.info(str(blank)).duration, {"bert": []})
    return root, a


def texts_of(cuts):
    return {c.id: " ".join(s.text for s in c.supervisions) for c in cuts}


def test_mfa_cuts_match_the_files(mfa):
    root, _ = mfa
    corpus = load_corpus(root)
    assert corpus.layout == "mfa"
    assert texts_of(corpus.cuts) == {
        "u1": "On the other hand, if he were already in... 42!", "u2": "The machine comprised a box.",
        "u3-001": "first part,", "u3-002": "overlap", "u3-003": "second", "u4": "Root level file.",
        "stereo": "Stereo words"}
    speakers = {c.id: c.supervisions[0].speaker for c in corpus.cuts}
    assert speakers == {"u1": "anna", "u2": "anna", "u3-001": "carl", "u3-002": "dora", "u3-003": "carl",
                        "u4": "corpus", "stereo": "bert"}
    assert corpus.speakers == ["anna", "bert", "carl", "corpus", "dora"]
    audio = {"u1": "anna/u1.wav", "u2": "anna/u2.flac", "u4": "u4.ogg", "stereo": "bert/stereo.wav"}
    for cut in corpus.cuts:
        if cut.id in audio:  # whole-file cuts: duration and native rate from the header
            info = soundfile.info(str(root / audio[cut.id]))
            assert cut.sampling_rate == info.samplerate
            assert cut.start == 0 and cut.duration == pytest.approx(info.duration, abs=1e-6)
            assert cut.custom == {"output_stem": audio[cut.id].rsplit(".", 1)[0], "output_offset": 0.0}
        assert cut.num_channels == 1
        assert not re.search(r"\s", cut.id)
    assert [c.id for c in load_corpus(root).cuts] == [c.id for c in corpus.cuts]  # stable order


def test_root_files_are_spoken_by_the_folder(mfa, monkeypatch):
    root, _ = mfa
    monkeypatch.chdir(root)
    speakers = {c.id: c.supervisions[0].speaker for c in load_corpus(".").cuts}
    assert speakers["u4"] == "corpus" and speakers["u1"] == "anna"


def test_textgrid_intervals_become_segments(mfa):
    root, _ = mfa
    cuts = {c.id: c for c in load_corpus(root).cuts}
    for cut_id, (start, end) in {"u3-001": (0.25, 1.0), "u3-002": (1.125, 1.375), "u3-003": (1.5, 2.25)}.items():
        cut, sample = cuts[cut_id], 2 / 22050  # lhotse puts cut boundaries on samples
        assert (cut.start, cut.end) == pytest.approx((start, end), abs=sample)
        assert cut.custom == {"output_stem": "bert/u3", "output_offset": cut.start}
        assert cut.supervisions[0].start == 0 and cut.supervisions[0].duration == pytest.approx(end - start, abs=sample)
        full, _ = soundfile.read(str(root / "bert" / "u3.mp3"), dtype="float32")
        first = round(cut.start * 22050)
        expected = full[first:first + cut.num_samples]
        np.testing.assert_allclose(cut.load_audio()[0], expected, atol=1e-6)


def test_skipped_items_and_their_reasons(mfa):
    root, _ = mfa
    skipped = {Path(s.path).relative_to(root).as_posix(): s.reason for s in load_corpus(root).skipped}
    assert set(skipped) == {"anna/no_text.wav", "anna/orphan.lab", "anna/empty.lab", "anna/corrupt.wav",
                            "bert/blank.TextGrid"}
    assert skipped["anna/no_text.wav"].startswith("audio without transcript")
    assert skipped["anna/orphan.lab"] == "transcript without audio"
    assert skipped["anna/empty.lab"] == "empty transcript"
    assert skipped["anna/corrupt.wav"].startswith("unreadable audio")
    assert skipped["bert/blank.TextGrid"].startswith("empty transcript: the TextGrid has no non-empty interval")


def test_clashing_stems_get_path_ids(tmp_path):
    for speaker in ("s1", "s2"):
        convert(UTTS[0], tmp_path / speaker / "utt 1", "flac", seconds=0.5)
        (tmp_path / speaker / "utt 1.lab").write_text(f"said by {speaker}")
    corpus = load_corpus(tmp_path)
    assert texts_of(corpus.cuts) == {"s1-utt_1": "said by s1", "s2-utt_1": "said by s2"}
    assert [c.custom["output_stem"] for c in corpus.cuts] == ["s1/utt 1", "s2/utt 1"]


def test_progress_bars_only_when_asked(mfa, capsys):
    root, _ = mfa
    load_corpus(root)
    assert "Reading corpus" not in capsys.readouterr().err
    load_corpus(root, progress=True)
    assert "Reading corpus" in capsys.readouterr().err


def test_stereo_is_averaged_lazily(mfa):
    root, _ = mfa
    cut = next(c for c in load_corpus(root).cuts if c.id == "stereo")
    both, _ = soundfile.read(str(root / "bert" / "stereo.wav"), dtype="float32")
    assert both.shape[1] == 2
    np.testing.assert_allclose(cut.load_audio(), both.mean(axis=1)[None], atol=1e-6)
    assert cut.recording.sources[0].type == "file"  # nothing was decoded at loading time
    # lhotse's own downmix (MultiCut.to_mono) sums the channels instead of averaging them
    lhotse_mono = Recording.from_file(root / "bert" / "stereo.wav").to_cut().to_mono(mono_downmix=True)
    np.testing.assert_allclose(lhotse_mono.load_audio(), 2 * cut.load_audio(), atol=1e-5)


def test_saved_cuts_load_back(mfa, tmp_path):
    root, _ = mfa
    cuts = load_corpus(root).cuts
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    again = load_corpus(tmp_path / "cuts.jsonl.gz")
    assert again.layout == "lhotse"
    assert [(c.id, c.custom) for c in again.cuts] == [(c.id, c.custom) for c in cuts]
    stereo = next(c for c in again.cuts if c.id == "stereo")
    np.testing.assert_allclose(stereo.load_audio(), next(c for c in cuts if c.id == "stereo").load_audio())


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_resamples_to_16k_features(tmp_path, fmt):
    path = convert(UTTS[1], tmp_path / "spk" / "utt", fmt, seconds=1.5)
    path.with_suffix(".lab").write_text("words")
    (cut,) = load_corpus(tmp_path).cuts
    info = soundfile.info(str(path))
    assert (cut.sampling_rate, cut.duration) == (info.samplerate, pytest.approx(info.duration, abs=1e-6))
    resampled = cut.resample(16000)
    assert resampled.load_audio().shape == (1, pytest.approx(info.duration * 16000, abs=1))
    feats = resampled.compute_features(Fbank())
    assert feats.shape[1] == 80 and abs(feats.shape[0] - info.duration * 100) <= 1


def test_only_headers_are_read(tmp_path, monkeypatch):
    for k in range(16):
        convert(UTTS[k % 5], tmp_path / f"s{k % 3}" / f"u{k:02d}", ["flac", "mp3", "ogg", "wav8k"][k % 4], seconds=0.3)
        (tmp_path / f"s{k % 3}" / f"u{k:02d}.lab").write_text("text")

    def no_decoding(*args, **kwargs):
        raise AssertionError("audio samples were read")

    monkeypatch.setattr(soundfile.SoundFile, "read", no_decoding)
    monkeypatch.setattr(soundfile, "read", no_decoding)
    assert len(load_corpus(tmp_path).cuts) == 16


def kaldi_dir(tmp_path):
    data = tmp_path / "data" / "train"
    a = convert(UTTS[0], tmp_path / "audio" / "a", "wav8k")
    b = convert(UTTS[2], tmp_path / "audio" / "b", "wav44k-stereo")
    data.mkdir(parents=True)
    (data / "bad.wav").write_bytes(b"not audio")
    (data / "wav.scp").write_text(f"recA {a}\nrecB {b}\nrecC bad.wav\nrecD cat {a} |\nrecE cat {a} |\n")
    (data / "reco2dur").write_text(f"recD {soundfile.info(str(a)).duration}\n")
    (data / "segments").write_text("u1 recA 0.5 2.0\nu2 recA 2.5 -1\nu3 recB 1.0 3.0\nu4 recC 0 1\n"
                                   "u5 recD 0.25 1.5\nu6 recB 3.0 4.0\nu7 recA 5.0 99.0\nu8 recB 10 11\nu9 recZ 0 1\n")
    (data / "text").write_text("u1 hello  there\nu2 general kenobi\nu3 foo\nu4 bar\nu5 from a pipe\nu6\n"
                               "u7 past the end\nu8 after the end\n")
    (data / "utt2spk").write_text("u1 s1\nu2 s1\nu3 s2\nu4 s2\nu5 s3\nu6 s2\nu7 s1\nu8 s2\n")
    return data, a, b


@pytest.mark.filterwarnings("ignore:You requested a subset of a recording that is read from disk via a bash command")
def test_kaldi_with_segments(tmp_path):
    data, a, b = kaldi_dir(tmp_path)
    assert detect_layout(data) == "kaldi"
    corpus = load_corpus(data)
    a_dur = soundfile.info(str(a)).duration
    expected = {"u1": ("recA", 0.5, 2.0, "s1", "hello there"), "u2": ("recA", 2.5, a_dur, "s1", "general kenobi"),
                "u3": ("recB", 1.0, 3.0, "s2", "foo"), "u5": ("recD", 0.25, 1.5, "s3", "from a pipe"),
                "u7": ("recA", 5.0, a_dur, "s1", "past the end")}
    got = {c.id: (c.recording_id, c.start, c.end, c.supervisions[0].speaker, c.supervisions[0].text)
           for c in corpus.cuts}
    assert got == {k: (r, pytest.approx(s), pytest.approx(e), spk, t) for k, (r, s, e, spk, t) in expected.items()}
    assert all(c.custom == {"output_stem": c.recording_id, "output_offset": c.start} for c in corpus.cuts)
    rates = {c.recording_id: c.sampling_rate for c in corpus.cuts}
    assert rates == {"recA": 8000, "recB": 44100, "recD": 8000}
    full, _ = soundfile.read(str(a), dtype="float32")
    pipe = next(c for c in corpus.cuts if c.id == "u5")
    np.testing.assert_allclose(pipe.load_audio()[0], full[2000:12000], atol=1e-6)
    stereo = next(c for c in corpus.cuts if c.id == "u3")
    both, _ = soundfile.read(str(b), dtype="float32")
    np.testing.assert_allclose(stereo.load_audio()[0], both[44100:132300].mean(axis=1), atol=1e-6)
    reasons = sorted(s.reason.split(":")[0] for s in corpus.skipped)
    assert reasons == ["command without duration", "empty segment", "empty transcript", "transcript without audio",
                       "unreadable audio"]


def test_kaldi_without_segments_or_utt2spk(tmp_path):
    data = tmp_path / "kaldi"
    data.mkdir()
    paths = [convert(u, tmp_path / "wav" / u, "flac", seconds=1.0) for u in UTTS[:2]]
    (data / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in zip(UTTS, paths)))
    (data / "text").write_text(f"{UTTS[0]} FIRST ONE\n{UTTS[1]} SECOND\n")
    corpus = load_corpus(data)
    assert {c.id: (c.supervisions[0].speaker, c.supervisions[0].text, c.duration) for c in corpus.cuts} == {
        UTTS[0]: (UTTS[0], "FIRST ONE", 1.0), UTTS[1]: (UTTS[1], "SECOND", 1.0)}


def shipped_transcripts(part_dir: Path) -> dict:
    lines = [line.split(maxsplit=1) for t in part_dir.glob("*/*/*.trans.txt") for line in t.read_text().splitlines()]
    return dict(lines)


def test_librispeech_part_and_root(tmp_path):
    part = tmp_path / "LibriSpeech" / "my-part"
    for speaker in ("1201", "2201"):
        shutil.copytree(DEV / speaker, part / speaker)
    chapter = part / "1201" / "12011"
    trans = chapter / "1201-12011.trans.txt"
    (chapter / "1201-12011-0003.flac").write_bytes(b"fLaC broken")
    (chapter / "1201-12011-0004.flac").unlink()
    trans.write_text(trans.read_text() + "1201-12011-0099\n")
    (chapter / "1201-12011-0005.flac").rename(chapter / "1201-12011-0777.flac")
    reference = shipped_transcripts(DEV)
    usable = {u: t for u, t in reference.items() if u[:4] in ("1201", "2201")
              and u not in ("1201-12011-0003", "1201-12011-0004", "1201-12011-0005")}
    for folder, prefix in ((part, ""), (part.parent, "my-part/")):
        assert detect_layout(folder) == "librispeech"
        corpus = load_corpus(folder)
        assert texts_of(corpus.cuts) == usable
        for cut in corpus.cuts:
            spk, chap, _ = cut.id.split("-")
            assert cut.custom["output_stem"] == f"{prefix}{spk}/{chap}/{cut.id}"
            assert cut.duration == pytest.approx(soundfile.info(str(part / spk / chap / f"{cut.id}.flac")).duration)
            assert cut.supervisions[0].speaker == spk
        assert sorted((Path(s.path).name, s.reason.split(":")[0]) for s in corpus.skipped) == [
            ("1201-12011-0003.flac", "unreadable audio"), ("1201-12011-0777.flac", "audio without transcript"),
            ("1201-12011.trans.txt", "empty transcript"), ("1201-12011.trans.txt", "transcript without audio"),
            ("1201-12011.trans.txt", "transcript without audio")]


def test_shipped_librispeech_is_detected_and_complete():
    corpus = load_corpus(DATA / "LibriSpeech")
    assert corpus.layout == "librispeech" and len(corpus.cuts) == 384 and not corpus.skipped
    assert detect_layout(DEV) == "librispeech"


def test_lhotse_manifests(tmp_path):
    paths = [convert(u, tmp_path / "wav" / u, "flac", seconds=1.0) for u in UTTS[:3]]
    recordings = RecordingSet.from_recordings(Recording.from_file(p) for p in paths)
    sups = SupervisionSet.from_segments(
        SupervisionSegment(id=f"{r.id} seg", recording_id=r.id, start=0.25, duration=0.5, text=f"text {k}",
                           speaker="x") for k, r in enumerate(recordings) if k < 2)
    (tmp_path / "m").mkdir()
    recordings.to_file(tmp_path / "m" / "demo_recordings.jsonl.gz")
    sups.to_file(tmp_path / "m" / "demo_supervisions.jsonl.gz")
    expected = {f"{UTTS[0]}_seg": "text 0", f"{UTTS[1]}_seg": "text 1"}
    for given in ("m", "m/demo_recordings.jsonl.gz", "m/demo_supervisions.jsonl.gz"):
        corpus = load_corpus(tmp_path / given)
        assert corpus.layout == "lhotse" and texts_of(corpus.cuts) == expected
        assert [(c.start, c.duration, c.custom["output_stem"]) for c in corpus.cuts] == [
            (0.25, 0.5, UTTS[0]), (0.25, 0.5, UTTS[1])]
        assert [s.reason.split(":")[0] for s in corpus.skipped] == ["audio without transcript"]
    (tmp_path / "m" / "demo_supervisions.jsonl.gz").unlink()
    with pytest.raises(FsalignError, match="recordings manifest alone.*supervisions"):
        load_corpus(tmp_path / "m" / "demo_recordings.jsonl.gz")
    cuts = CutSet.from_manifests(recordings, sups)
    cuts.to_file(tmp_path / "cuts.jsonl")
    corpus = load_corpus(tmp_path / "cuts.jsonl")
    assert [c.id for c in corpus.cuts] == [c.id for c in cuts][:2]
    assert [s.reason.split(":")[0] for s in corpus.skipped] == ["empty transcript"]


def test_detection_rules_and_errors(tmp_path):
    with pytest.raises(FsalignError, match="does not exist"):
        detect_layout(tmp_path / "missing")
    with pytest.raises(FsalignError, match="does not exist"):
        load_corpus(tmp_path / "missing", layout="mfa")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FsalignError, match=r"cannot tell.*wav\.scp.*trans\.txt.*manifest.*audio"):
        detect_layout(tmp_path / "empty")
    both = tmp_path / "both"
    (both / "a" / "b").mkdir(parents=True)
    (both / "wav.scp").write_text("")
    (both / "a" / "b" / "a-b.trans.txt").write_text("")
    with pytest.raises(FsalignError, match="ambiguous.*kaldi and librispeech"):
        detect_layout(both)
    with pytest.raises(FsalignError, match="not a lhotse manifest"):
        detect_layout(both / "wav.scp")
    with gzip.open(tmp_path / "x_cuts.jsonl.gz", "wt") as f:
        f.write("")
    assert detect_layout(tmp_path / "x_cuts.jsonl.gz") == "lhotse"
    with pytest.raises(FsalignError, match="unknown corpus layout"):
        load_corpus(both, layout="timit")


def test_unusable_corpus_names_the_folder_and_what_was_found(tmp_path):
    convert(UTTS[0], tmp_path / "spk" / "lonely", "flac", seconds=0.5)
    (tmp_path / "spk" / "other.lab").write_text("text")
    with pytest.raises(FsalignError, match=rf"no usable utterance in {re.escape(str(tmp_path))}.*"
                                           r"1 x audio without transcript.*1 x transcript without audio"):
        load_corpus(tmp_path)


def spoken(text: str) -> str:
    from num2words import num2words

    def spell(match):
        return num2words(int(match.group(1)), to="ordinal" if match.group(2) else "cardinal")

    text = re.sub(r"\b(\d+)(st|nd|rd|th)?\b", spell, text)
    return " ".join(re.sub(r"[^A-Z' ]+", " ", text.upper().replace("-", " ")).split())


def test_shipped_mfa_example():
    corpus = load_corpus(DATA / "mfa_example")
    assert corpus.layout == "mfa" and not corpus.skipped and len(corpus.cuts) == 384
    reference = {**shipped_transcripts(DEV), **shipped_transcripts(DATA / "LibriSpeech" / "train-clean-5")}
    assert {c.id: spoken(c.supervisions[0].text) for c in corpus.cuts} == reference
    assert {c.id: c.supervisions[0].speaker for c in corpus.cuts} == {u: u.split("-")[0] for u in reference}
    assert {c.sampling_rate for c in corpus.cuts} == {8000, 16000, 22050, 24000, 44100}
    assert any(c.custom["output_offset"] > 0 for c in corpus.cuts)  # the TextGrid utterances
    assert all(c.custom["output_stem"] == f"{c.id[:4]}/{c.id}" for c in corpus.cuts)
