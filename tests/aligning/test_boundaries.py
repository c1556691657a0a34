"""``boundaries="expected"`` (``fsalign align --boundaries expected``): posterior-mean word and token times."""
import numpy as np
import pytest
from click.testing import CliRunner
from lhotse import CutSet, Features
from lhotse.features.io import NumpyFilesWriter

from fsalign.aligning.aligner import Aligner, align_cuts
from fsalign.cli.main import main
from fsalign.corpus.cuts import CutDataset
from fsalign.corpus.tokenizers import CharTokenizer
from fsalign.engine.builtin import CtcTopology
from fsalign.engine.mismatch import MismatchOptions
from fsalign.errors import FsalignError
from fsalign.results.formats import read_ctm
from fsalign.scores.posterior import PosteriorScorer
from tests.align_fixtures import OracleModel, make_tiny_checkpoint, make_tiny_cuts, oracle_features


@pytest.fixture(scope="module")
def oracle_cuts(tmp_path_factory):
    root = tmp_path_factory.mktemp("boundaries")
    rng = np.random.default_rng(1)
    cuts = []
    with NumpyFilesWriter(root / "feats") as writer:
        for cut in CutSet.from_file(make_tiny_cuts(root, 4)):
            feats = oracle_features(cut, cut.supervisions[0].alignment["word"], rng)
            cut.features = Features(type="oracle", num_frames=feats.shape[0], num_features=80, frame_shift=0.01,
                                    sampling_rate=16000, start=0.0, duration=cut.duration, storage_type=writer.name,
                                    storage_path=str(root / "feats"), storage_key=writer.write(cut.id, feats))
            cuts.append(cut)
    return CutSet.from_cuts(cuts)


def _aligner(boundaries, mismatch=None):
    scorer = PosteriorScorer(OracleModel(), CtcTopology(28), mismatch=mismatch)
    return Aligner(scorer, CharTokenizer(), boundaries)


def _results(aligner, cuts):
    return {r.cut_id: r.times for rs in align_cuts(aligner, cuts, max_duration=20.0) for r in rs}


def test_expected_times_are_the_matrix_expected_boundaries_and_the_viterbi_words(oracle_cuts):
    aligner = _aligner("expected")
    viterbi, expected = _results(_aligner("viterbi"), oracle_cuts), _results(aligner, oracle_cuts)
    batch = CutDataset(aligner.tokenizer, sort=False)[oracle_cuts]
    matrix = aligner.score(batch)
    starts, ends = matrix.expected_boundaries()
    step, offset = matrix.frame_step_s, matrix.time_offset_s
    for b, cut_id in enumerate(batch.cut_ids):
        got, vit = expected[cut_id], viterbi[cut_id]
        assert [w.label for w in got.words] == [w.label for w in vit.words]
        positions = np.cumsum([0] + [len(w) for w in batch.transcripts[b]])
        for w, span in enumerate(got.words):
            first, last = positions[w], positions[w + 1] - 1
            assert span.start == pytest.approx(max(0.0, float(starts[b, first]) * step + offset), abs=1e-9)
            assert span.end == pytest.approx(min(max(0.0, float(ends[b, last]) * step + offset), got.duration),
                                             abs=1e-9)
        for p, token in enumerate(got.tokens):
            assert token.start == pytest.approx(max(0.0, float(starts[b, p]) * step + offset), abs=1e-9)
        # the oracle's posteriors are sharp: the expected boundaries stay near the best path's
        shifts = [abs(a.start - b.start) for a, b in zip(got.words, vit.words)]
        assert np.mean(shifts) <= step and max(shifts) <= 5 * step
    # and some are not on a frame edge
    fractional = [s.start for t in expected.values() for s in t.tokens if abs(s.start / step - round(s.start / step))
                  > 1e-3]
    assert fractional


def test_expected_boundaries_are_refused_where_they_do_not_exist():
    with pytest.raises(FsalignError, match="boundaries"):
        _aligner("expected", MismatchOptions())
    with pytest.raises(FsalignError, match="boundaries"):
        _aligner("middle")
    assert _aligner("expected").settings()["boundaries"] == "expected"
    assert "boundaries" not in _aligner("viterbi").settings()  # the settings of runs from before the option


def test_cli_writes_expected_times_and_checks_the_option(tmp_path):
    cuts = make_tiny_cuts(tmp_path, 3)
    ckpt = make_tiny_checkpoint(tmp_path, "hmm", train_steps=2, cuts=cuts)
    outs = {}
    for b in ("viterbi", "expected"):
        out = tmp_path / f"{b}.ctm"
        result = CliRunner().invoke(main, ["align", "--checkpoint", str(ckpt), "--cuts", str(cuts), "--output",
                                           str(out), "--boundaries", b, "--no-progress", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        outs[b] = read_ctm(out)
    assert outs["viterbi"].keys() == outs["expected"].keys()
    for utt, words in outs["expected"].items():
        assert [w.label for w in words] == [w.label for w in outs["viterbi"][utt]]
    assert outs["viterbi"] != outs["expected"]
    result = CliRunner().invoke(main, ["align", "--checkpoint", str(ckpt), "--cuts", str(cuts), "--output",
                                       str(tmp_path / "m.ctm"), "--boundaries", "expected", "--allow-mismatch",
                                       "--no-progress", "--device", "cpu"])
    assert result.exit_code == 1 and "boundaries" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_default_is_expected_where_it_exists():
    from fsalign.aligning.aligner import default_boundaries
    from fsalign.engine.topology import Topology

    assert Aligner(PosteriorScorer(OracleModel(), CtcTopology(28)), CharTokenizer()).boundaries == "expected"
    scorer = PosteriorScorer(OracleModel(), CtcTopology(28), mismatch=MismatchOptions())
    assert default_boundaries(scorer) == "viterbi" and Aligner(scorer, CharTokenizer()).boundaries == "viterbi"

    # the same CTC as a user-built FST: k2's graphs, no occupancy kernel for them
    custom = Topology.from_fst(CtcTopology(28).fst, 28)
    assert Aligner(PosteriorScorer(OracleModel(), custom), CharTokenizer()).boundaries == "viterbi"


def test_cli_defaults_are_expected_boundaries_and_the_corpus_prior(tmp_path):
    """No option = ``--boundaries expected --prior-scale 1.5`` (an HMM checkpoint with a corpus prior); a
    checkpoint without one aligns as ``--prior-scale 0``; ``--allow-mismatch`` alone gets frame edges and no
    prior; the same model aligned with the CTC topology gets β = 1."""
    import torch

    cuts = make_tiny_cuts(tmp_path, 3)
    ckpt = make_tiny_checkpoint(tmp_path, "hmm", train_steps=2, cuts=cuts)
    state = torch.load(ckpt)
    state["corpus_prior"] = None
    torch.save(state, tmp_path / "no_prior.pt")

    def run(name, *options, checkpoint=ckpt):
        out = tmp_path / f"{name}.ctm"
        result = CliRunner().invoke(main, ["align", "--checkpoint", str(checkpoint), "--cuts", str(cuts), "--output",
                                           str(out), "--no-progress", "--device", "cpu", *options])
        assert result.exit_code == 0, result.output
        return out.read_bytes()

    default = run("default")
    assert default == run("explicit", "--boundaries", "expected", "--prior-scale", "1.5")
    assert default != run("beta1", "--boundaries", "expected", "--prior-scale", "1")
    ctc = run("ctc", "--topology", "ctc")
    assert ctc == run("ctc1", "--topology", "ctc", "--prior-scale", "1")
    assert ctc != run("ctc15", "--topology", "ctc", "--prior-scale", "1.5")
    assert default != run("no_prior_asked", "--boundaries", "expected", "--prior-scale", "0")
    assert default != run("edges", "--boundaries", "viterbi", "--prior-scale", "1")
    assert run("none", checkpoint=tmp_path / "no_prior.pt") == run("none0", "--boundaries", "expected",
                                                                  "--prior-scale", "0")
    assert run("mismatch") != run("mismatch_prior", "--allow-mismatch", "--prior-scale", "1.5")
    assert run("mismatch", "--allow-mismatch") == run("mismatch_edges", "--allow-mismatch", "--boundaries", "viterbi",
                                                      "--prior-scale", "0")
    assert run("mismatch") != run("mismatch_prior", "--allow-mismatch", "--prior-scale", "1.5")
