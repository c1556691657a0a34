"""``--grad-source`` / ``--aed-weight``: CTC, AED or hybrid gradient scores (eq. 50) from the command line."""
import inspect
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import fsalign.aligning.run as run_module
from fsalign.aligning.aligner import Aligner, grad_weights
from fsalign.cli.main import main
from fsalign.errors import FsalignError
from fsalign.scores.gradscore import (
    ALIGN_PERCENTILE,
    GradientScorer,
    grad_align,
    grad_score_matrix,
    grad_source_weights,
    gradscore_matrix,
)
from tests.align_fixtures import make_tiny_checkpoint, make_tiny_cuts

REPO = Path(__file__).resolve().parents[2]
NO_DECODER = "grad source 'aed' needs a model with an AED decoder, and this checkpoint has none"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("grad_source")
    cuts = make_tiny_cuts(root, 4)
    return {"aed": make_tiny_checkpoint(root, name="aed.pt", cuts=cuts, aed_layers=1),
            "plain": make_tiny_checkpoint(root, name="plain.pt", cuts=cuts),
            "cuts": cuts, "one": make_tiny_cuts(root, 1, name="one.jsonl.gz")}


class _Captured(Exception):
    pass


def _capture_scorer(monkeypatch):
    """Makes ``fsalign align`` stop where it would start aligning, keeping the aligner it built."""
    seen = {}

    def fake(aligner, *args, **kwargs):
        seen["scorer"] = aligner.scorer
        raise _Captured()

    monkeypatch.setattr(run_module, "align_to_output", fake)
    return seen


@pytest.mark.parametrize("model, flags, weights", [
    ("aed", [], (0.0, 1.0)),  # the default follows the checkpoint: AED when it has a decoder
    ("plain", [], (1.0, 0.0)),  # ... else CTC
    ("aed", ["--grad-source", "ctc"], (1.0, 0.0)),
    ("aed", ["--grad-source", "aed"], (0.0, 1.0)),
    ("aed", ["--grad-source", "hybrid"], (0.5, 0.5)),
    ("aed", ["--grad-source", "hybrid", "--aed-weight", "0.3"], (0.7, 0.3)),
    ("aed", ["--aed-weight", "0.3"], (0.7, 0.3)),  # a weight alone means hybrid
    ("aed", ["--grad-source", "hybrid", "--aed-weight", "1"], (0.0, 1.0)),
])
def test_align_flags_reach_the_gradient_scorer(setup, tmp_path, monkeypatch, model, flags, weights):
    seen = _capture_scorer(monkeypatch)
    result = CliRunner().invoke(main, ["align", "--checkpoint", str(setup[model]), "--cuts", str(setup["one"]),
                                       "--output", str(tmp_path / "out.ctm"), "--scores", "gradext", *flags])
    assert isinstance(result.exception, _Captured), result.output
    scorer = seen["scorer"]
    assert isinstance(scorer, GradientScorer) and scorer.variant == "gradext"
    assert (scorer.ctc_weight, scorer.aed_weight) == pytest.approx(weights)
    assert scorer.settings()["aed_weight"] == pytest.approx(weights[1])  # what the journal records


@pytest.mark.parametrize("flags, message", [
    (["--scores", "grad", "--grad-source", "aed"], NO_DECODER),
    (["--scores", "grad", "--grad-source", "hybrid"], "grad source 'hybrid' needs a model with an AED decoder"),
    (["--scores", "grad", "--aed-weight", "0.5"], "grad source 'hybrid' needs a model with an AED decoder"),
    (["--scores", "posterior", "--grad-source", "ctc"], "apply to gradient scores (grad, gradext), not 'posterior'"),
])
def test_align_refuses_what_the_model_cannot_do_before_reading_any_audio(setup, tmp_path, flags, message):
    missing_cuts = tmp_path / "no_such_cuts.jsonl.gz"  # never opened: the options are checked first
    result = CliRunner().invoke(main, ["align", "--checkpoint", str(setup["plain"]), "--cuts", str(missing_cuts),
                                       "--output", str(tmp_path / "out.ctm"), *flags])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, message", [
    (["--grad-source", "ctc", "--aed-weight", "0.3"], "aed weight 0.3 applies to grad source 'hybrid', not 'ctc'"),
    (["--grad-source", "hybrid", "--aed-weight", "1.5"], "aed weight must be in [0, 1], got 1.5"),
])
def test_align_refuses_bad_weights(setup, tmp_path, flags, message):
    result = CliRunner().invoke(main, ["align", "--checkpoint", str(setup["aed"]), "--cuts", str(setup["one"]),
                                       "--output", str(tmp_path / "out.ctm"), "--scores", "grad", *flags])
    assert result.exit_code == 1 and message in result.output, result.output


def test_plot_takes_the_grad_source_and_refuses_aed_without_decoder(setup, tmp_path):
    args = ["plot", "--cuts", str(setup["one"]), "--cut-id", "no-such-cut", "--output", str(tmp_path / "f.png"),
            "--scores", "grad", "--grad-source", "aed"]
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(setup["plain"])])
    assert result.exit_code == 1 and NO_DECODER in result.output  # before the cut is looked up
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(setup["aed"])])
    assert result.exit_code == 1 and "cut no-such-cut is not in" in result.output  # aed accepted


def test_a_resumed_align_with_another_aed_weight_is_refused(setup, tmp_path, monkeypatch):
    out = tmp_path / "out.ctm"
    args = ["align", "--checkpoint", str(setup["aed"]), "--cuts", str(setup["one"]), "--output", str(out),
            "--scores", "grad", "--no-progress"]

    def interrupted(self, batch):
        raise _Captured()  # as if killed: the journal stays

    with monkeypatch.context() as m:
        m.setattr(Aligner, "align", interrupted)
        first = CliRunner().invoke(main, [*args, "--aed-weight", "0.3"])
    assert isinstance(first.exception, _Captured)
    header = json.loads((tmp_path / "out.ctm.journal.jsonl").read_text().splitlines()[0])
    assert (header["ctc_weight"], header["aed_weight"]) == pytest.approx((0.7, 0.3))
    other = CliRunner().invoke(main, [*args, "--aed-weight", "0.5"])
    assert other.exit_code == 1 and "other settings" in other.output
    same = CliRunner().invoke(main, [*args, "--aed-weight", "0.3"])  # hybrid AED/CTC gradients, end to end
    assert same.exit_code == 0, same.output
    assert out.is_file() and len(out.read_text().splitlines()) > 0


def _mfa_corpus(root: Path) -> Path:
    corpus = root / "corpus" / "1101"
    corpus.mkdir(parents=True)
    for path in (REPO / "data" / "mfa_example" / "1101").glob("1101-11011-0000.*"):
        shutil.copy(path, corpus / path.name)
    return corpus.parent


def test_align_corpus_checks_the_grad_source_first_and_records_it(setup, tmp_path):
    corpus, out = _mfa_corpus(tmp_path), tmp_path / "out"
    runner = CliRunner()
    trained_here = runner.invoke(main, ["align-corpus", str(corpus), str(out), "--scores", "grad", "--grad-source",
                                        "aed", "--no-progress"])
    assert trained_here.exit_code == 1 and not out.exists(), trained_here.output
    assert "needs a model with an AED decoder, and the model align-corpus trains has none" in trained_here.output
    plain = runner.invoke(main, ["align-corpus", str(corpus), str(out), "--checkpoint", str(setup["plain"]),
                                 "--scores", "grad", "--grad-source", "hybrid", "--no-progress"])
    assert plain.exit_code == 1 and "this checkpoint has none" in plain.output and not out.exists()
    args = ["align-corpus", str(corpus), str(out), "--checkpoint", str(setup["aed"]), "--scores", "grad",
            "--no-progress"]
    done = runner.invoke(main, [*args, "--aed-weight", "0.3"])
    assert done.exit_code == 0, done.output
    settings = json.loads((out / "work" / "settings.json").read_text())
    assert (settings["scores"], settings["aed_weight"]) == ("grad", 0.3) and "grad_source" not in settings
    written = (out / "alignments.ctm").stat().st_mtime_ns
    realigned = runner.invoke(main, [*args, "--aed-weight", "0.5"])  # an alignment setting only: aligns again
    assert realigned.exit_code == 0, realigned.output
    assert json.loads((out / "work" / "settings.json").read_text())["aed_weight"] == 0.5
    assert (out / "alignments.ctm").stat().st_mtime_ns != written
    other = runner.invoke(main, [*args[:4], str(setup["plain"]), *args[5:]])  # another model: refused
    assert other.exit_code == 1 and "other settings" in other.output


def test_grad_source_weights_and_defaults():
    assert grad_source_weights("ctc") == (1.0, 0.0) and grad_source_weights("aed") == (0.0, 1.0)
    assert grad_source_weights("hybrid") == (0.5, 0.5)
    assert grad_source_weights("hybrid", 0.3) == pytest.approx((0.7, 0.3))
    with pytest.raises(FsalignError, match="grad source must be one of"):
        grad_source_weights("ctx")
    assert grad_weights("posterior") is None
    assert grad_weights("grad", decoder=True) == ("aed", 0.0, 1.0)
    assert grad_weights("grad", decoder=False) == ("ctc", 1.0, 0.0)
    with pytest.raises(FsalignError, match="the model X has none"):
        grad_weights("gradext", "aed", decoder=False, model_name="the model X")


def test_aligners_default_to_the_align_percentile_and_the_matrix_functions_to_the_papers():
    from fsalign.aligning.scorers import make_scorer
    from fsalign.cli.align import align as align_command

    def default(function, name):
        return inspect.signature(function).parameters[name].default

    cli = {p.name: p.default for p in align_command.params}["grad_percentile"]
    assert default(GradientScorer, "percentile") == default(make_scorer, "grad_percentile") == cli == ALIGN_PERCENTILE
    assert ALIGN_PERCENTILE == 80.0
    for function in (grad_score_matrix, gradscore_matrix, grad_align):
        assert default(function, "percentile") == 60.0, function.__name__  # eq. 45's "usually 60 %"
