"""ScoreMatrix against the engine's functions, selection, frame times, gradient matrices, and the scorers'
option checks."""
import math

import pytest
import torch

import fsalign
from fsalign.engine.builtin import CtcTopology, HmmTopology
from fsalign.engine.scales import Scales
from fsalign.errors import FsalignError, InfeasibleAlignment
from fsalign.results.alignment import Alignment, TokenSpan, WordSpan
from fsalign.scores.gradscore import GradientScorer, gradscore_matrix
from fsalign.scores.matrix import ScoreMatrix
from fsalign.scores.posterior import PosteriorScorer

B, T, C = 3, 8, 5
LENGTHS = torch.tensor([8, 5, 2])
TRANSCRIPTS = [[[1, 2], [2, 3]], [[4], [1]], [[1, 2, 3]]]  # utterance 2 needs 3 frames: infeasible
SCALE_ARGS = dict(posterior_scale=0.8, prior_scale=0.4, transition_scale=0.5)


def _log_probs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, C, generator=g).log_softmax(-1), torch.randn(B, C, generator=g).log_softmax(-1)


def _topologies():
    return [CtcTopology(C, label_loop=0.3, blank_loop=0.6), HmmTopology(C, label_loop=0.5, silence_loop=0.9)]


def _same_alignments(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        if b is None:
            assert a is None
            continue
        assert torch.equal(a.labels, b.labels)
        assert a.score == pytest.approx(b.score, abs=1e-6)
        assert a.tokens == b.tokens and a.words == b.words


@pytest.mark.parametrize("topo", _topologies(), ids=["ctc", "hmm"])
def test_matrix_equals_the_engine_functions_with_the_same_scales(topo):
    lp, prior = _log_probs()
    graphs = topo.compile(TRANSCRIPTS)
    matrix = ScoreMatrix(lp, LENGTHS, graphs, Scales(log_prior=prior, **SCALE_ARGS))
    args = (lp, LENGTHS, graphs)
    kwargs = dict(log_prior=prior, **SCALE_ARGS)
    expected = fsalign.full_sum_scores(*args, **kwargs)
    assert math.isinf(float(expected[2])) and torch.isfinite(expected[:2]).all()
    torch.testing.assert_close(matrix.total(), expected)
    torch.testing.assert_close(matrix.loss(), fsalign.full_sum_loss(*args, **kwargs))
    torch.testing.assert_close(matrix.marginals(), fsalign.soft_alignment(*args, **kwargs))
    _same_alignments(matrix.best_paths(), fsalign.viterbi_align(*args, on_infeasible="skip", **kwargs))
    with pytest.raises(InfeasibleAlignment):
        matrix.best_paths(on_infeasible="raise")
    assert len(matrix) == B and matrix.min_frames.tolist() == graphs.min_frames.tolist()


def test_matrix_total_changes_with_the_scales():
    """The matrix really passes its scales on: another prior scale gives another total."""
    lp, prior = _log_probs()
    graphs = _topologies()[1].compile(TRANSCRIPTS)
    a = ScoreMatrix(lp, LENGTHS, graphs, Scales(log_prior=prior, **SCALE_ARGS)).total()
    b = ScoreMatrix(lp, LENGTHS, graphs, Scales(log_prior=prior, **{**SCALE_ARGS, "prior_scale": 0.0})).total()
    torch.testing.assert_close(b, fsalign.full_sum_scores(lp, LENGTHS, graphs, 0.8, 0.0, None, 0.5))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("rows, longest", [([2, 0], 8), ([2, 1], 5), ([1], 5)])
def test_select_equals_a_matrix_of_those_rows(rows, longest):
    lp, prior = _log_probs(1)
    topo = _topologies()[1]
    matrix = ScoreMatrix(lp, LENGTHS, topo.compile(TRANSCRIPTS), Scales(log_prior=prior, **SCALE_ARGS))
    part = matrix.select(rows)
    idx = torch.tensor(rows)
    built = ScoreMatrix(lp[idx, :longest], LENGTHS[idx], topo.compile([TRANSCRIPTS[r] for r in rows]),
                        Scales(log_prior=prior[idx], **SCALE_ARGS))
    assert part.scores.shape == (len(rows), longest, C)
    assert torch.equal(part.scores, built.scores)
    assert part.lengths.tolist() == built.lengths.tolist()
    assert part.graphs.transcripts == built.graphs.transcripts
    assert part.graphs.min_frames.tolist() == built.graphs.min_frames.tolist()
    assert torch.equal(part.scales.log_prior, prior[idx])
    assert part.scales.posterior_scale == 0.8 and part.scales.transition_scale == 0.5
    torch.testing.assert_close(part.total(), built.total())
    torch.testing.assert_close(part.total(), matrix.total()[idx])
    torch.testing.assert_close(part.marginals(), built.marginals())
    _same_alignments(part.best_paths(), built.best_paths())


def test_select_keeps_a_per_column_prior():
    lp, _ = _log_probs()
    prior = torch.randn(C).log_softmax(-1)
    matrix = ScoreMatrix(lp, LENGTHS, CtcTopology(C).compile(TRANSCRIPTS), Scales(prior_scale=0.3, log_prior=prior))
    part = matrix.select([1, 0])
    assert part.scales.log_prior is prior
    torch.testing.assert_close(part.total(), matrix.total()[[1, 0]])


def test_from_posteriors_frame_times():
    lp, _ = _log_probs()
    matrix = ScoreMatrix.from_posteriors(lp, [8, 5, 2], HmmTopology(C).compile(TRANSCRIPTS), frame_shift_s=0.01,
                                         subsampling=4)
    assert matrix.frame_step_s == pytest.approx(0.04)
    assert matrix.time_offset_s == pytest.approx(-0.015)
    assert matrix.lengths.dtype == torch.int64 and matrix.lengths.tolist() == [8, 5, 2]
    assert matrix.tokens is None and matrix.name == "log posterior"
    assert matrix.seconds(WordSpan(0, 2, 5, 0, 1)) == pytest.approx((2 * 0.04 - 0.015, 5 * 0.04 - 0.015))
    assert matrix.seconds(WordSpan(0, 0, 1, 0, 0)) == pytest.approx((0.0, 0.025))  # clipped at 0
    assert matrix.seconds(TokenSpan(0, 0, 1, 3, 4)) == pytest.approx((0.105, 0.145))
    ali = Alignment(torch.zeros(8, dtype=torch.long), 0.0, [], [WordSpan(0, 1, 3, 0, 0), WordSpan(1, 4, 8, 1, 1)])
    assert matrix.word_times(ali) == [pytest.approx((0.025, 0.105)), pytest.approx((0.145, 0.305))]
    plain = ScoreMatrix.from_posteriors(lp, LENGTHS, HmmTopology(C).compile(TRANSCRIPTS))
    assert plain.frame_step_s == 0.01 and plain.time_offset_s == 0.0


def test_has_nan_only_for_nan_in_valid_frames():
    lp, _ = _log_probs()
    lp[1, 4, 2] = math.nan  # the last valid frame of utterance 1
    lp[2, 6, 0] = math.nan  # padding of utterance 2 (2 frames)
    lp[0, 3, 1] = math.inf  # not a NaN
    matrix = ScoreMatrix(lp, LENGTHS, CtcTopology(C).compile(TRANSCRIPTS))
    assert matrix.has_nan().tolist() == [False, True, False]
    assert matrix.valid().sum(1).tolist() == [8, 5, 2]


def test_posterior_matrix_positions_are_token_ids():
    lp, _ = _log_probs()
    matrix = ScoreMatrix(lp, LENGTHS, CtcTopology(C, blank=4).compile([[[1, 2], [2, 3]], [[0], [1]], [[3]]]))
    assert matrix.blank == 4
    assert matrix.position_columns(0) == [4, 1, 2, 2, 3]
    assert matrix.position_tokens(1) == [0, 1]


# ---------------------------------------------------------------------------------------------- gradient matrices

GRAD_TRANSCRIPTS = [[[5, 3], [7]], [[2]], [[9, 9]]]
GRAD_LENGTHS = torch.tensor([12, 7, 10])


def _gradient_matrix(seed=0):
    G = torch.randn(3, 3, 12, generator=torch.Generator().manual_seed(seed))
    return gradscore_matrix(G, GRAD_LENGTHS, GRAD_TRANSCRIPTS, "grad", frame_shift_s=0.01)


def test_gradient_matrix_best_paths_carry_token_ids_not_positions():
    matrix = _gradient_matrix()
    assert matrix.tokens == [[5, 3, 7], [2], [9, 9]]
    assert matrix.graphs.transcripts == [[[1, 2], [3]], [[1]], [[1, 2]]]  # positions, 1-based
    assert matrix.frame_step_s == 0.01 and matrix.time_offset_s == 0.0 and matrix.name == "GradScore"
    alis = matrix.best_paths()
    for b, ali in enumerate(alis):
        flat = [t for w in GRAD_TRANSCRIPTS[b] for t in w]
        assert [t.token for t in ali.tokens] == flat
        assert [t.position for t in ali.tokens] == list(range(len(flat)))
        for t in ali.tokens:  # the column of a token's frames is its position + 1
            assert set(ali.labels[t.start:t.end].tolist()) <= {0, t.position + 1}
            assert int(ali.labels[t.start]) == t.position + 1
        assert ali.num_frames == int(GRAD_LENGTHS[b])


def test_gradient_matrix_positions():
    matrix = _gradient_matrix()
    assert matrix.position_tokens(0) == [5, 3, 7] and matrix.position_tokens(1) == [2]
    assert matrix.position_columns(0) == [0, 1, 2, 3] and matrix.position_columns(2) == [0, 1, 2]
    part = matrix.select([2, 1])
    assert part.tokens == [[9, 9], [2]]
    assert part.scores.shape[1] == 10
    assert [[t.token for t in a.tokens] for a in part.best_paths()] == [[9, 9], [2]]


# ---------------------------------------------------------------------------------------------- scorers


class FakePosteriorModel:
    """log_probs: every 4th frame of the features, log-softmaxed (an encoder with subsampling 4)."""

    subsampling = 4
    blank = 0

    def __init__(self, num_labels=C):
        self.num_labels = num_labels

    def log_probs(self, features, lengths):
        return features[:, ::4].log_softmax(-1), (lengths + 3) // 4

    def parameters(self):
        return iter([torch.zeros(1)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(blank_penalty=math.nan), "blank penalty must be a finite number, got nan"),
        (dict(blank_penalty=math.inf), "blank penalty must be a finite number, got inf"),
        (dict(blank_penalty="-1"), "blank penalty must be a finite number, got '-1'"),
        (dict(model=object()), "model must be a model with log_probs(features, lengths), got 'object'"),
        (dict(model=FakePosteriorModel(6)), "topology must be a topology with the model's 6 columns, got "
                                            "CtcTopology(name='CTC topology', num_labels=5)"),
    ],
)
def test_posterior_scorer_option_errors(kwargs, message):
    kwargs = {"model": FakePosteriorModel(), "topology": CtcTopology(C), **kwargs}
    with pytest.raises(FsalignError) as err:
        PosteriorScorer(**kwargs)
    assert message in str(err.value)


def test_posterior_scorer_matrix_by_hand():
    x = torch.randn(2, 13, C, generator=torch.Generator().manual_seed(3))
    prior = torch.randn(C).log_softmax(-1)
    scorer = PosteriorScorer(FakePosteriorModel(), CtcTopology(C), Scales(prior_scale=0.2, log_prior=prior),
                             blank_penalty=-2.0, frame_shift_s=0.01)
    matrix = scorer(x, torch.tensor([13, 6]), [[[1, 2]], [[3]]])
    shift = torch.tensor([-2.0] + [0.0] * (C - 1))
    torch.testing.assert_close(matrix.scores, (x[:, ::4].log_softmax(-1) + shift).log_softmax(-1))
    assert matrix.lengths.tolist() == [4, 2]
    assert matrix.frame_step_s == pytest.approx(0.04) and matrix.time_offset_s == pytest.approx(-0.015)
    assert matrix.scales.log_prior is prior and matrix.graphs.transcripts == [[[1, 2]], [[3]]]
    other = torch.zeros(2, C)
    assert scorer(x, torch.tensor([13, 6]), [[[1, 2]], [[3]]], log_prior=other).scales.log_prior is other
    assert scorer.settings()["frame_step_s"] == pytest.approx(0.04) and scorer.settings()["blank_penalty"] == -2.0


class FakeCtcModel:
    subsampling = 1
    blank = 0

    def forward_encoder(self, features, lengths):
        return features, lengths

    def ctc_logits(self, h):
        return h

    def parameters(self):
        return iter([torch.zeros(1)])


class FakeAedOnlyModel:
    subsampling = 1

    def forward_encoder(self, features, lengths):
        return features, lengths

    def aed_log_probs(self, h, h_lengths, targets, target_lengths):  # pragma: no cover - never called
        raise AssertionError

    def parameters(self):
        return iter([torch.zeros(1)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(variant="gradscore"), "variant must be one of ('grad', 'gradext'), got 'gradscore'"),
        (dict(p=0), "p must be a number > 0 (or inf), got 0"),
        (dict(p=-1.0), "p must be a number > 0 (or inf), got -1.0"),
        (dict(p=math.nan), "p must be a number > 0 (or inf), got nan"),
        (dict(p="2"), "p must be a number > 0 (or inf), got '2'"),
        (dict(percentile=101), "percentile must be in [0, 100], got 101"),
        (dict(percentile=-1), "percentile must be in [0, 100], got -1"),
        (dict(percentile=math.nan), "percentile must be in [0, 100], got nan"),
        (dict(blank_score=math.inf), "blank score must be a finite number, got inf"),
        (dict(blank_score=math.nan), "blank score must be a finite number, got nan"),
        (dict(prefix="backward"), "prefix must be one of ('forward', 'onset'), got 'backward'"),
        (dict(ctc_weight=-1.0), "ctc weight must be a finite number >= 0, got -1.0"),
        (dict(aed_weight=-0.5), "aed weight must be a finite number >= 0, got -0.5"),
        (dict(ctc_weight=math.inf), "ctc weight must be a finite number >= 0, got inf"),
        (dict(ctc_weight=0.0, aed_weight=0.0), "ctc weight and aed weight must not both be 0"),
        (dict(chunk_size=0), "chunk size must be an integer >= 1, got 0"),
        (dict(chunk_size=2.5), "chunk size must be an integer >= 1, got 2.5"),
        (dict(model=FakeAedOnlyModel()), "ctc weight 1.0 needs a model with `ctc_logits` (FakeAedOnlyModel has none)"),
        (dict(aed_weight=0.5), "aed weight 0.5 needs a model with `aed_log_probs` (FakeCtcModel has none)"),
    ],
)
def test_gradient_scorer_option_errors(kwargs, message):
    kwargs = {"model": FakeCtcModel(), **kwargs}
    with pytest.raises(FsalignError) as err:
        GradientScorer(**kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize("chunk_size", [math.inf, math.nan, "a"], ids=["inf", "nan", "str"])
def test_gradient_scorer_chunk_size_that_is_not_a_number(chunk_size):
    with pytest.raises(FsalignError, match="chunk size must be an integer >= 1"):
        GradientScorer(FakeCtcModel(), chunk_size=chunk_size)


def test_gradient_scorer_accepts_the_edges_of_its_ranges():
    for kwargs in (dict(p=math.inf), dict(percentile=0), dict(percentile=100), dict(chunk_size=None),
                   dict(chunk_size=1), dict(model=FakeAedOnlyModel(), ctc_weight=0.0, aed_weight=1.0)):
        scorer = GradientScorer(**{"model": FakeCtcModel(), **kwargs})
        assert scorer.settings()["time_offset_s"] == 0.0
