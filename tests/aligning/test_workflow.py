"""``fsalign align-corpus``: a user's folder in, TextGrids mirroring it out, resumable, one-line errors."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from lhotse import CutSet

from fsalign.aligning.corpus_stages import default_epochs, split_dev
from fsalign.cli.main import main
from fsalign.results.formats import read_ctm, read_textgrid, read_utterances
from tests.align_fixtures import make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "data" / "mfa_example"
# files of the shipped example in several formats: (speaker, stem, audio suffix, transcript suffix)
PICK = [("1101", "1101-11011-0000"), ("1201", "1201-12011-0000"), ("2201", "2201-22011-0000"),
        ("3101", "3101-31011-0003"), ("3201", "3201-32011-0001"), ("2102", "2102-21021-0004")]


def _copy(root: Path, extra: bool = True) -> Path:
    """A small MFA-layout corpus from the shipped example, plus a stray audio and a stray transcript."""
    corpus = root / "corpus"
    for speaker, stem in PICK:
        (corpus / speaker).mkdir(parents=True, exist_ok=True)
        for path in (EXAMPLE / speaker).glob(f"{stem}.*"):
            shutil.copy(path, corpus / speaker / path.name)
    if extra:
        audio = next(p for p in (EXAMPLE / "1101").glob("1101-11011-0001.*") if p.suffix not in (".lab", ".txt"))
        shutil.copy(audio, corpus / "1101" / f"untranscribed{audio.suffix}")
        (corpus / "1201" / "orphan.lab").write_text("A transcript without audio.")
        (corpus / "3101" / "3101-31011-0003.lab").write_text("Hello, world: 40 people came — on the 3rd!")
    return corpus


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflow")
    return root, make_tiny_checkpoint(root, topology="ctc", train_steps=2)


def _run(*args):
    return CliRunner().invoke(main, ["align-corpus", *map(str, args), "--no-progress"], catch_exceptions=False)


def test_align_only_writes_a_textgrid_per_audio_file_mirroring_the_corpus(tiny, tmp_path):
    root, checkpoint = tiny
    corpus = _copy(tmp_path)
    out = tmp_path / "out"
    result = _run(corpus, out, "--checkpoint", checkpoint)
    assert result.exit_code == 0, result.output
    grids = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.TextGrid"))
    assert grids == sorted(f"{speaker}/{stem}.TextGrid" for speaker, stem in PICK)
    # words as written, silence as empty intervals; the token tier of a character model is "tokens"
    written = [s.label for s in read_textgrid(out / "3101" / "3101-31011-0003.TextGrid", "words")]
    assert written == ["Hello,", "world:", "40", "people", "came", "on", "the", "3rd!"]
    tokens = read_textgrid(out / "3101" / "3101-31011-0003.TextGrid", "tokens")
    assert "".join(s.label for s in tokens) == "HELLOWORLDFORTYPEOPLECAMEONTHETHIRD"
    # the CTM holds the spoken words, times from the start of each recording
    ctm = read_ctm(out / "alignments.ctm")
    assert [s.label for s in ctm["3101-31011-0003"]] == "HELLO WORLD FORTY PEOPLE CAME ON THE THIRD".split()
    spans = ctm["3101-31011-0003"]
    assert all(a.end <= b.start + 1e-9 for a, b in zip(spans, spans[1:]))
    # a TextGrid transcript's segment starts inside its file: its times are file times, not cut times
    cuts = {c.id: c for c in CutSet.from_file(out / "alignments.jsonl.gz")}
    segment = cuts["2201-22011-0000"]
    grid_words = read_textgrid(out / "2201" / "2201-22011-0000.TextGrid", "words")
    assert grid_words[0].start >= segment.start - 1e-6 and ctm["2201-22011-0000"][0].start == pytest.approx(
        grid_words[0].start, abs=1e-3)
    sup = segment.supervisions[0]
    assert {"word", "token", "written"} <= set(sup.alignment)
    assert [item.symbol for item in cuts["3101-31011-0003"].supervisions[0].alignment["written"]][:3] == [
        "Hello,", "world:", "40"]
    report = json.loads((out / "report.json").read_text())
    assert report["aligned"] == len(PICK) and report["layout"] == "mfa"
    # confidence: the CTM's 6th column, the mean and the low-confidence words in the report
    scores = [s.score for spans in ctm.values() for s in spans]
    confidence = report["confidence"]
    assert confidence["num_words"] == len(scores) and confidence["mean_word"] == round(sum(scores) / len(scores), 4)
    low = [(w["file"], w["word"]) for w in confidence["low_words"]]
    assert confidence["num_low"] == len(low) == sum(c < 0.5 for c in scores) and set(confidence["files"]) == {
        f"{speaker}/{stem}" for speaker, stem in PICK}
    assert ("3101/3101-31011-0003", "HELLO") in low or ctm["3101-31011-0003"][0].score >= 0.5
    assert f"word confidence: mean {confidence['mean_word']:.3f}" in (out / "report.txt").read_text()
    grid = read_utterances(out / "3101")["3101-31011-0003"]  # the confidence tier, read back onto the words tier
    assert [w.score for w in grid.words] == [s.score for s in spans]
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped_files"]}
    assert reasons["orphan.lab"].startswith("transcript without audio")
    assert next(r for n, r in reasons.items() if n.startswith("untranscribed")).startswith("audio without transcript")
    assert "aligned 6 of 6 utterances" in (out / "report.txt").read_text()
    # a second run does nothing and says so
    again = _run(corpus, out, "--checkpoint", checkpoint)
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_reference_times_are_measured_in_the_report(tiny, tmp_path):
    root, checkpoint = tiny
    corpus = _copy(tmp_path, extra=False)
    out = tmp_path / "out"
    result = _run(corpus, out, "--checkpoint", checkpoint, "--reference", REPO / "data/alignments/LibriSpeech")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    hyp = read_utterances(out / "alignments.ctm")
    ref = read_utterances(REPO / "data/alignments/LibriSpeech")
    words = sum(len(ref[u].words) for u in hyp)
    assert report["reference"]["num_words"] == words and report["reference"]["num_utterances"] == len(PICK)
    assert report["reference"]["tse_boundary_ms"] > 0


def test_a_run_with_other_settings_into_the_same_folder_is_refused(tiny, tmp_path):
    root, checkpoint = tiny
    corpus = _copy(tmp_path, extra=False)
    out = tmp_path / "out"
    assert _run(corpus, out, "--checkpoint", checkpoint).exit_code == 0
    other = _run(corpus, out, "--checkpoint", checkpoint, "--oov", "skip")
    assert other.exit_code == 1 and "other settings" in other.output and "Traceback" not in other.output


def test_a_rerun_with_other_alignment_settings_aligns_again(tiny, tmp_path):
    """Only alignment settings changed (here --boundaries): the earlier features and model are kept, every file
    is aligned again, and the outputs are those of a fresh run; a journal of other settings is started over."""
    root, checkpoint = tiny
    corpus = _copy(tmp_path, extra=False)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    assert _run(corpus, out, "--checkpoint", checkpoint, "--boundaries", "viterbi").exit_code == 0
    edges = (out / "alignments.ctm").read_bytes()
    feats = (out / "work" / "feats.lca").stat().st_mtime_ns
    assert _run(corpus, out, "--checkpoint", checkpoint).exit_code == 0
    assert _run(corpus, fresh, "--checkpoint", checkpoint).exit_code == 0
    assert (out / "work" / "feats.lca").stat().st_mtime_ns == feats
    for name in ["alignments.ctm", "alignments.jsonl.gz", *(f"{s}/{t}.TextGrid" for s, t in PICK)]:
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name
    assert (out / "alignments.ctm").read_bytes() != edges
    # the same settings, but a journal another version wrote (other defaults in its header)
    journal = out / "work" / "align.journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    other = lines[0].replace(b'"prior_scale":1.0', b'"prior_scale":0.5')
    assert other != lines[0]
    journal.write_bytes(other + b"".join(lines[1:]))
    (out / "report.json").unlink()
    (out / "alignments.ctm").unlink()
    assert _run(corpus, out, "--checkpoint", checkpoint).exit_code == 0
    assert (out / "alignments.ctm").read_bytes() == (fresh / "alignments.ctm").read_bytes()
    assert journal.read_bytes().splitlines()[0] == lines[0].rstrip(b"\n")


@pytest.mark.parametrize("case", ["missing corpus", "output is a file", "bad checkpoint", "empty corpus",
                                  "bad epochs", "read-only output"])
def test_user_errors_are_one_line(tiny, tmp_path, case):
    root, checkpoint = tiny
    corpus = _copy(tmp_path, extra=False)
    out, extra = tmp_path / "out", []
    if case == "missing corpus":
        corpus = tmp_path / "nope"
    elif case == "output is a file":
        out.write_text("x")
    elif case == "bad checkpoint":
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"not a checkpoint" * 10)
        extra = ["--checkpoint", bad]
    elif case == "empty corpus":
        corpus = tmp_path / "empty"
        corpus.mkdir()
        (corpus / "a.lab").write_text("words without audio")
    elif case == "bad epochs":
        extra = ["--epochs", "0"]
    elif case == "read-only output":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        out.mkdir()
        out.chmod(0o500)
    result = _run(corpus, out, *extra)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output


def test_training_kill_and_rerun_gives_the_same_outputs(tmp_path):
    """Trains a char model for 2 epochs on 6 utterances; a SIGKILL after the first epoch's checkpoint, then a
    rerun, gives byte-identical TextGrids, CTM and cuts as an uninterrupted run."""
    corpus = _copy(tmp_path, extra=False)
    command = [sys.executable, "-m", "fsalign.cli.main", "align-corpus", str(corpus), "", "--unit", "char",
               "--epochs", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    done = subprocess.run(command[:5] + [str(full)] + command[6:], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command[:5] + [str(killed)] + command[6:], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (killed / "model" / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "report.json").exists()
    done = subprocess.run(command[:5] + [str(killed)] + command[6:], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ["alignments.ctm", "alignments.jsonl.gz", *(f"{s}/{t}.TextGrid" for s, t in PICK)]:
        assert (killed / name).read_bytes() == (full / name).read_bytes(), name
    # aligning in a process that did not train (the model kept, the outputs gone) gives the same bytes
    # too: the chain kernels' thread pool must not change torch's thread count behind its back
    again = tmp_path / "again"
    shutil.copytree(full, again, ignore=shutil.ignore_patterns("*.TextGrid", "alignments.*", "report.*",
                                                                 "align.journal.jsonl"))
    done = subprocess.run(command[:5] + [str(again)] + command[6:], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ["alignments.ctm", "alignments.jsonl.gz", *(f"{s}/{t}.TextGrid" for s, t in PICK)]:
        assert (again / name).read_bytes() == (full / name).read_bytes(), name
    report = json.loads((full / "report.json").read_text())
    assert report["model_dev"]["epoch"] == 2 and report["aligned"] == len(PICK)


def test_default_epochs_and_the_held_out_split():
    assert default_epochs(24.0) == 20 and default_epochs(60.0) == 20 and default_epochs(5.0) == 80
    assert default_epochs(1.0) == 100
    ids = [f"u{k:03d}" for k in range(200)]
    dev = split_dev(ids)
    assert len(dev) == 10 and len(set(dev)) == 10 and set(dev) <= set(ids)
    assert split_dev(list(reversed(ids))) == dev  # a function of the ids, not of their order
    assert split_dev(["a", "b"]) == ["b"] and split_dev(["a"]) == []
    assert len(split_dev([f"u{k}" for k in range(5000)])) == 100


def test_report_measures_word_and_token_errors_as_fsalign_tse(tiny, tmp_path):
    from fsalign.results.compare import compare_alignments
    from fsalign.results.formats import write_textgrid

    root, checkpoint = tiny
    corpus = _copy(tmp_path, extra=False)
    first = tmp_path / "first"
    assert _run(corpus, first, "--checkpoint", checkpoint).exit_code == 0
    reference = tmp_path / "reference"  # the first run's spoken words (CTM) and tokens (TextGrids), file times
    for utt in read_utterances(first / "alignments.ctm").values():
        utt.tokens = read_textgrid(next(first.rglob(f"{utt.utt_id}.TextGrid")), "tokens")
        write_textgrid(utt, reference / f"{utt.utt_id}.TextGrid")
    out = tmp_path / "out"
    result = _run(corpus, out, "--checkpoint", checkpoint, "--reference", reference)
    assert result.exit_code == 0, result.output
    measured = json.loads((out / "report.json").read_text())["reference"]
    # against its own times: no error, every word's tokens compared
    assert measured["num_utterances"] == len(PICK) and measured["num_skipped"] == 0
    assert measured["tse_boundary_ms"] < 0.5 and measured["within_ms"]["10"] == 1.0
    assert measured["token_words"] == measured["num_words"] and measured["token_words_skipped"] == 0
    tokens = sum(len(read_textgrid(g, "tokens")) for g in reference.glob("*.TextGrid"))
    assert measured["num_tokens"] == tokens and measured["token_boundary_ms"] < 1e-3
    # the same numbers as the library on the CTM, with the TextGrids' token tiers as the hypothesis' tokens
    hyp = read_utterances(out / "alignments.ctm")
    for utt in hyp.values():
        utt.tokens = read_textgrid(next(out.rglob(f"{utt.utt_id}.TextGrid")), "tokens")
    expected = compare_alignments(read_utterances(reference), hyp).to_dict()
    for key in ("tse_boundary_ms", "onset_ms", "offset_bias_ms", "num_words", "num_tokens", "token_words"):
        assert measured[key] == pytest.approx(expected[key], abs=1e-6), key
    assert measured["within_ms"] == pytest.approx(expected["within_ms"])
    assert sum(p["boundaries"] for p in measured["by_place"].values()) == 2 * measured["num_words"]
    for place, numbers in expected["by_place"].items():
        assert measured["by_place"][place]["boundaries"] == numbers["boundaries"], place
        assert measured["by_place"][place]["error_ms"] == pytest.approx(numbers["error_ms"], abs=1e-6), place
    text = (out / "report.txt").read_text()
    assert "  onset (word start) error:" in text and "  token boundary error: 0.0 ms" in text
