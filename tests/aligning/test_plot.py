"""`fsalign plot` and fsalign.aligning.plot: what is drawn is checked against hand-made inputs; the command
runs for every score kind on a tiny checkpoint and names what is wrong on bad input."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from fsalign.aligning.plot import (  # noqa: E402
    CutScores,
    draw_word_boundaries,
    plot_cut_alignment,
    plot_posteriors,
    score_cut,
)
from fsalign.checkpoint import load_checkpoint  # noqa: E402
from fsalign.cli.main import main  # noqa: E402
from fsalign.results.alignment import Alignment, TokenSpan, WordSpan  # noqa: E402
from tests.align_fixtures import (  # noqa: E402
    ALIGNMENTS,
    make_tiny_checkpoint,
    make_tiny_cuts,
)

CUT = "1201-12011-0002"  # "I THINK I'M IN THE WRONG BUILDING", 2.209 s


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("plot")
    cuts = make_tiny_cuts(root, 3)
    return make_tiny_checkpoint(root, cuts=cuts), cuts, root


def _rectangles(ax):
    return sorted((round(p.get_x(), 6), round(p.get_y(), 6), round(p.get_width(), 6))
                  for p in ax.patches if isinstance(p, Rectangle))


def test_plot_posteriors_rows_and_outlines():
    # 6 frames, columns: 0 blank, 1 A, 2 B; transcript "A B A"; path: - A A B - A
    log_probs = torch.log_softmax(torch.arange(18, dtype=torch.float32).reshape(6, 3).sin(), dim=1)
    ali = Alignment(torch.tensor([0, 1, 1, 2, 0, 1]), 0.0,
                    tokens=[TokenSpan(0, 0, 1, 1, 3), TokenSpan(1, 0, 2, 3, 4), TokenSpan(2, 1, 1, 5, 6)],
                    words=[WordSpan(0, 1, 4, 0, 1), WordSpan(1, 5, 6, 2, 2)])
    ax = plot_posteriors(log_probs, 6, [1, 2, 1], blank=0, token_names=["<b>", "A", "B"], alignment=ali,
                         frame_shift_s=0.04)
    image = ax.images[0].get_array()
    assert image.shape == (4, 6)  # blank + 3 positions, 6 frames
    assert torch.allclose(torch.as_tensor(image[3]), log_probs[:, 1].double())  # position 3 is token A
    assert torch.allclose(torch.as_tensor(image[2]), log_probs[:, 2].double())
    # token spans (x = start * 0.04, y = row - 0.5, width) and blank runs on row 0
    assert _rectangles(ax) == [(0.0, -0.5, 0.04), (0.04, 0.5, 0.08), (0.12, 1.5, 0.04), (0.16, -0.5, 0.04),
                               (0.2, 2.5, 0.04)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["<b>", "A", "B", "A"]
    plt.close(ax.figure)
    # placed on the audio: everything moves by the frame-time offset
    ax = plot_posteriors(log_probs, 6, [1, 2, 1], blank=0, alignment=ali, frame_shift_s=0.04, time_offset_s=-0.015)
    assert ax.images[0].get_extent()[:2] == pytest.approx([-0.015, 0.225])
    assert [r[0] for r in _rectangles(ax)] == pytest.approx([-0.015, 0.025, 0.105, 0.145, 0.185])
    plt.close(ax.figure)


def test_draw_word_boundaries_lines_and_labels():
    _, ax = plt.subplots()
    draw_word_boundaries(ax, [("HI", 0.1, 0.4), ("YOU", 0.5, 0.9)], color="cyan", linestyle="--")
    assert [line.get_xdata()[0] for line in ax.lines] == [0.1, 0.4, 0.5, 0.9]
    assert [(t.get_text(), round(t.get_position()[0], 6)) for t in ax.texts] == [("HI", 0.25), ("YOU", 0.7)]
    plt.close(ax.figure)


@pytest.mark.parametrize("kind", ["posterior", "grad"])
def test_score_cut_alignment_covers_the_transcript(tiny, kind):
    from lhotse import CutSet

    from fsalign.corpus.cuts import CutDataset, cut_text

    checkpoint, cuts, _ = tiny
    loaded = load_checkpoint(checkpoint)
    cut = next(c for c in CutSet.from_file(cuts) if c.id == CUT)
    features = CutDataset(loaded.tokenizer).features(cut)
    scores = score_cut(loaded, features, cut_text(cut), kind)
    assert isinstance(scores, CutScores)
    words = scores.word_times()
    assert [w for w, _, _ in words] == "I THINK I'M IN THE WRONG BUILDING".split()
    assert all(0 <= s < e <= cut.duration + 0.04 for _, s, e in words)
    assert all(a[2] <= b[1] for a, b in zip(words, words[1:]))  # in time order, no overlap
    matrix = scores.matrix.scores[0]
    num_tokens = sum(len(w) for w in loaded.tokenizer.encode(cut_text(cut)))
    if kind == "posterior":  # encoder frames at 40 ms, columns: the model's C outputs
        assert scores.matrix.frame_step_s == pytest.approx(0.04)
        assert scores.matrix.time_offset_s == pytest.approx(-0.015)
        assert matrix.shape == (scores.alignment.num_frames, loaded.tokenizer.num_labels)
        assert torch.allclose(matrix.exp().sum(1), torch.ones(matrix.shape[0]), atol=1e-4)
    else:  # GradScore: blank + one column per transcript position, input frames at 10 ms
        assert scores.matrix.frame_step_s == 0.01 and scores.matrix.time_offset_s == 0.0
        assert matrix.shape == (features.shape[0], num_tokens + 1)
        assert scores.matrix.position_tokens(0) == [t for w in loaded.tokenizer.encode(cut_text(cut)) for t in w]
    ref = [(w, s, e) for w, s, e in words]
    fig = plot_cut_alignment(features, scores, loaded.tokenizer.token_names, ref_words=ref)
    ax_feat, ax_scores = fig.axes[:2]
    hyp_x = sorted(x for _, s, e in words for x in (s, e))
    assert sorted(line.get_xdata()[0] for line in ax_feat.lines) == sorted(hyp_x + hyp_x)  # hyp and ref
    plt.close(fig)


@pytest.mark.parametrize("kind, extra", [("posterior", ["--topology", "hmm", "--blank-penalty", "-2"]),
                                         ("grad", []), ("gradext", ["--p", "1"])])
def test_plot_command_writes_an_image(tiny, kind, extra):
    checkpoint, cuts, root = tiny
    out = root / f"{kind}.png"
    result = CliRunner().invoke(main, [
        "plot", "--checkpoint", str(checkpoint), "--cuts", str(cuts), "--cut-id", CUT, "--scores", kind,
        "--output", str(out), "--ref", str(ALIGNMENTS / "dev-clean-2" / "textgrid"), *extra])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 7 words, {kind} scores" in result.output
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert not list(root.glob(".*.tmp"))


def test_plot_command_errors_name_the_problem(tiny, tmp_path):
    checkpoint, cuts, _ = tiny
    base = ["plot", "--checkpoint", str(checkpoint), "--cuts", str(cuts), "--output", str(tmp_path / "x.png")]
    result = CliRunner().invoke(main, base + ["--cut-id", "no-such-cut"])
    assert result.exit_code == 1 and f"Error: cut no-such-cut is not in {cuts}" in result.output
    (tmp_path / "ref.ctm").write_text("other 1 0.0 0.1 A\n")
    result = CliRunner().invoke(main, base + ["--cut-id", CUT, "--ref", str(tmp_path / "ref.ctm")])
    assert result.exit_code == 1 and f"cut {CUT} has no reference in" in result.output
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["plot", "--checkpoint", str(tmp_path / "bad.pt"), "--cuts", str(cuts),
                                       "--cut-id", CUT, "--output", str(tmp_path / "x.png")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


def test_help_states_every_default():
    for command in ("plot", "tse"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
        options = [line for line in result.output.split("Options:")[1].splitlines() if line.strip()]
        blocks = ("\n" + "\n".join(options)).split("\n  -")[1:]
        assert blocks[0].startswith("-ref" if command == "tse" else "-checkpoint")
        for block in blocks:
            if block.startswith("-help"):
                continue
            assert "default" in block, f"{command}: option without its default: {block.split()[0]}"
