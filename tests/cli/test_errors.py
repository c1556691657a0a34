"""Every ordinary file problem is one line naming the file and what is wrong, never a traceback."""
import gzip
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lhotse import CutSet, RecordingSet

from tests.align_fixtures import make_tiny_checkpoint, make_tiny_cuts

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    cuts = make_tiny_cuts(root, 2)
    checkpoint = make_tiny_checkpoint(root, train_steps=0)
    (root / "garbage.pt").write_bytes(b"not a checkpoint\n" * 50)
    (root / "empty.pt").write_bytes(b"")
    data = checkpoint.read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save({"epoch": 1}, root / "other.pt")
    RecordingSet.from_recordings(c.recording for c in CutSet.from_file(cuts)).to_file(root / "recordings.jsonl.gz")
    lines = gzip.open(cuts, "rt").read().splitlines()
    with gzip.open(root / "corrupt.jsonl.gz", "wt") as f:
        f.write(lines[0] + "\n" + lines[1][:40] + "\n")
    (root / "a_file").write_text("x")
    return root, cuts, checkpoint


def _run(*args, cwd=None):
    done = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)
    out = done.stdout + done.stderr
    errors = [line for line in out.splitlines() if line.lower().startswith("error")]
    return done.returncode, out, errors


FSALIGN = ["-m", "fsalign.cli.main"]


@pytest.mark.parametrize("case, expected", [
    ("garbage.pt", "garbage.pt is not an fsalign training checkpoint: torch cannot read it"),
    ("empty.pt", "empty.pt is not an fsalign training checkpoint"),
    ("truncated.pt", "truncated.pt is not an fsalign training checkpoint"),
    ("other.pt", "other.pt is not an fsalign training checkpoint: missing"),
    ("missing.pt", "missing.pt"),
])
def test_align_and_plot_refuse_what_is_not_a_checkpoint(files, case, expected):
    root, cuts, _ = files
    for command in (["align", "--cuts", cuts, "--output", root / "o.ctm"],
                    ["plot", "--cuts", cuts, "--cut-id", "x", "--output", root / "o.png"],
                    ["align-corpus", REPO / "data" / "mfa_example", root / f"ac_{case}"]):
        code, out, errors = _run(*FSALIGN, *command, "--checkpoint", root / case)
        assert code in (1, 2) and len(errors) == 1 and expected in errors[0], out  # 2: click's usage error
        assert case != "missing.pt" or "does not exist" in errors[0]
        assert "Traceback" not in out


@pytest.mark.parametrize("manifest, expected", [
    ("recordings.jsonl.gz", "is a manifest of Recordings, not of cuts"),
    ("corrupt.jsonl.gz", "corrupt.jsonl.gz:2: not a JSON line"),
])
def test_align_names_what_is_wrong_with_the_cuts(files, manifest, expected):
    root, _, checkpoint = files
    code, out, errors = _run(*FSALIGN, "align", "--checkpoint", checkpoint, "--cuts", root / manifest,
                             "--output", root / "o.ctm")
    assert code == 1 and len(errors) == 1 and expected in errors[0] and "Traceback" not in out, out


def test_outputs_below_a_file_are_refused_before_any_work(files):
    root, cuts, checkpoint = files
    below = root / "a_file" / "sub"
    commands = [
        [*FSALIGN, "align", "--checkpoint", checkpoint, "--cuts", cuts, "--output", below / "o.ctm"],
        [*FSALIGN, "plot", "--checkpoint", checkpoint, "--cuts", cuts, "--cut-id", "x", "--output", below / "o.png"],
        [*FSALIGN, "tse", "--ref", REPO / "data/alignments/dev-clean-2.words.ctm",
         "--hyp", REPO / "data/alignments/dev-clean-2.words.ctm", "--json", below / "t.json"],
        [*FSALIGN, "align-corpus", REPO / "data" / "mfa_example", below],
        [REPO / "recipes/librispeech/prepare.py", "--corpus-dir", REPO / "data/LibriSpeech", "--parts", "dev-clean-2",
         "--output-dir", below],
    ]
    for command in commands:
        code, out, errors = _run(*command)
        assert code == 1 and len(errors) == 1 and "a_file is a file, not a folder" in errors[0], out
        assert "Traceback" not in out


def test_training_recipe_errors_are_one_line(files, tmp_path):
    root, _, _ = files
    train = REPO / "recipes/librispeech/train.py"
    for args, expected in (
        (["--data-dir", tmp_path / "none"], "tokenizer.json does not exist"),
        (["--data-dir", tmp_path / "none", "--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
        (["--data-dir", tmp_path / "none", "--peak-lr", "nan"], "--peak-lr must be a number > 0"),
        (["--data-dir", tmp_path / "none", "--label-loop", "1.5"], "--label-loop must be a probability"),
    ):
        code, out, errors = _run(train, "--unit", "char", "--exp-dir", tmp_path / "exp", *args)
        assert code == 1 and len(errors) == 1 and expected in errors[0] and "Traceback" not in out, out
    prepare = REPO / "recipes/librispeech/prepare.py"
    for args, expected in (
        (["--corpus-dir", tmp_path / "none"], "--corpus-dir"),
        (["--corpus-dir", REPO / "data/LibriSpeech", "--vocab-size", "1"], "--vocab-size must be an integer >= 3"),
        (["--corpus-dir", REPO / "data/LibriSpeech", "--stage", "5"], "--stage must be in 0..3"),
    ):
        code, out, errors = _run(prepare, "--parts", "dev-clean-2", "--output-dir", tmp_path / "data", *args)
        assert code == 1 and len(errors) == 1 and expected in errors[0] and "Traceback" not in out, out


def test_an_untrained_checkpoint_is_reported_before_its_times_are_trusted(files, tmp_path):
    root, cuts, checkpoint = files
    state = torch.load(checkpoint)
    state["dev"] = {"ler": 0.97}
    torch.save(state, tmp_path / "untrained.pt")
    code, out, _ = _run(*FSALIGN, "align", "--checkpoint", tmp_path / "untrained.pt", "--cuts", cuts,
                        "--output", tmp_path / "o.ctm", "--no-progress")
    assert code == 0 and "looks untrained (dev label error rate 0.97" in out, out
    state["dev"] = {"ler": 0.2}
    torch.save(state, tmp_path / "trained.pt")
    code, out, _ = _run(*FSALIGN, "align", "--checkpoint", tmp_path / "trained.pt", "--cuts", cuts,
                        "--output", tmp_path / "o2.ctm", "--no-progress")
    assert code == 0 and "looks untrained" not in out
