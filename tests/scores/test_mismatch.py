"""The garbage column (against NumPy), its log prior, and the posterior scorer with mismatch allowed."""
import numpy as np
import pytest
import torch

import fsalign
from fsalign.engine.builtin import HmmTopology
from fsalign.engine.mismatch import MismatchOptions, MismatchTopology
from fsalign.engine.scales import Scales
from fsalign.errors import FsalignError
from fsalign.scores.mismatch import garbage_column, with_garbage_column
from fsalign.scores.posterior import PosteriorScorer


def _log_probs(B=2, T=6, C=5, seed=0):
    return torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed)).log_softmax(-1)


@pytest.mark.parametrize("kind", ["max", "sum", "zero"])
def test_garbage_column_against_numpy(kind):
    lp = _log_probs()
    got = garbage_column(lp, (0, 3), kind)
    tokens = lp.numpy()[..., [1, 2, 4]]
    expected = {"max": tokens.max(-1), "sum": np.log(np.exp(tokens).sum(-1)), "zero": np.zeros(tokens.shape[:-1])}
    assert got.shape == (2, 6, 1)
    np.testing.assert_allclose(got[..., 0].numpy(), expected[kind], rtol=1e-5, atol=1e-6)


def test_garbage_column_needs_a_token_column():
    with pytest.raises(FsalignError, match="needs a token column"):
        garbage_column(_log_probs(C=2), (0, 1), "max")


@pytest.mark.parametrize("shape", [(5,), (2, 5)])
def test_the_garbage_column_has_log_prior_zero(shape):
    lp, prior = _log_probs(), torch.randn(shape).log_softmax(-1)
    scores, scales = with_garbage_column(lp, Scales(prior_scale=0.5, log_prior=prior), (0,), "max")
    assert scores.shape == (2, 6, 6) and torch.equal(scores[..., :5], lp)
    assert scales.log_prior.shape == shape[:-1] + (6,)
    assert torch.equal(scales.log_prior[..., :5], prior) and float(scales.log_prior[..., 5].abs().sum()) == 0
    dense = scales.dense(scores)  # β·0 for the garbage column
    torch.testing.assert_close(dense[..., 5], scores[..., 5])


class _Model(torch.nn.Module):
    """Gives fixed log posteriors (the features are the log posteriors)."""

    num_labels, subsampling, blank = 5, 1, 0

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def log_probs(self, features, lengths):
        return features, lengths


def test_posterior_scorer_with_mismatch():
    topo = HmmTopology(5)
    options = MismatchOptions(garbage_penalty=2.0, skip_penalty=5.0)
    scorer = PosteriorScorer(_Model(), topo, Scales(0.7, 0.0, None, 0.3), mismatch=options)
    lp = _log_probs()
    matrix = scorer(lp, torch.tensor([6, 4]), [[[1], [2, 3]], [[4]]])
    assert matrix.scores.shape == (2, 6, 6)
    assert isinstance(matrix.graphs.topology, MismatchTopology) and matrix.graphs.topology.options == options
    torch.testing.assert_close(matrix.scores[..., 5:], garbage_column(lp, (0,), "max"))
    # the same numbers as the engine functions on the extended matrix
    expected = fsalign.full_sum_scores(matrix.scores, matrix.lengths, matrix.graphs, posterior_scale=0.7,
                                       transition_scale=0.3)
    torch.testing.assert_close(matrix.total(), expected)
    assert scorer.settings()["allow_mismatch"] == options.settings()
    assert "allow_mismatch" not in PosteriorScorer(_Model(), topo).settings()
