"""check_inputs' messages, intersect's batch mapping against single-utterance k2 intersections, and Scales."""
import math

import k2
import numpy as np
import pytest
import torch

from fsalign.engine.builtin import CtcTopology, HmmTopology
from fsalign.engine.lattice import FULL_SUM_BEAM, check_inputs, intersect
from fsalign.engine.scales import Scales
from fsalign.errors import FsalignError

GEN = torch.Generator().manual_seed(0)
LOG_PROBS = torch.randn(2, 5, 4, generator=GEN).log_softmax(-1)
LENGTHS = torch.tensor([5, 3])
GRAPHS = CtcTopology(4).compile([[[1]], [[2, 3]]])


def _nan_at(b, t, value=float("nan")):
    x = LOG_PROBS.clone()
    x[b, t, 1] = value
    return x


@pytest.mark.parametrize(
    "args, message",
    [
        (([[0.0]], LENGTHS, GRAPHS), "log_probs must be a torch.Tensor of shape (B, T, C), got list"),
        ((LOG_PROBS[0], LENGTHS, GRAPHS), "log_probs must have shape (B, T, C), got shape (5, 4)"),
        ((LOG_PROBS[None], LENGTHS, GRAPHS), "got shape (1, 2, 5, 4)"),
        ((LOG_PROBS.long(), LENGTHS, GRAPHS), "log_probs must be floating point, got torch.int64"),
        ((LOG_PROBS, LENGTHS, GRAPHS.fsa), "graphs must be the TrainingGraphs returned by topology.compile(...), "
                                           "got Fsa"),
        ((LOG_PROBS[:1], LENGTHS[:1], GRAPHS), "log_probs has 1 utterances but graphs has 2"),
        ((LOG_PROBS[:, :, :3], LENGTHS, GRAPHS), "log_probs has C=3 columns but the CTC topology has num_labels=4"),
        ((LOG_PROBS, torch.tensor([5]), GRAPHS), "lengths must have shape (2,), got (1,)"),
        ((LOG_PROBS, torch.tensor([[5, 3]]), GRAPHS), "lengths must have shape (2,), got (1, 2)"),
        ((LOG_PROBS, torch.tensor([5.0, 3.0]), GRAPHS), "lengths must be integer frame counts, got torch.float32"),
        ((LOG_PROBS, torch.tensor([True, True]), GRAPHS), "lengths must be integer frame counts, got torch.bool"),
        ((LOG_PROBS, torch.tensor([0, 6]), GRAPHS), "lengths must be in 1..T=5; utterance 0 has 0, utterance 1 has 6"),
        ((LOG_PROBS, torch.tensor([5, -1]), GRAPHS), "utterance 1 has -1"),
        ((_nan_at(1, 2), LENGTHS, GRAPHS), "log_probs contain NaN or inf in valid frames of utterance 1 "
                                           "(first at frame 2)"),
        ((_nan_at(0, 4, math.inf), LENGTHS, GRAPHS), "valid frames of utterance 0 (first at frame 4)"),
    ],
)
def test_check_inputs_says_what_arrived(args, message):
    with pytest.raises(FsalignError) as err:
        check_inputs(*args)
    assert message in str(err.value)


def test_check_inputs_names_every_utterance_with_nan():
    x = _nan_at(0, 3)
    x[1, 1, 0] = float("nan")
    x[1, 2, 0] = float("nan")
    with pytest.raises(FsalignError) as err:
        check_inputs(x, LENGTHS, GRAPHS)
    assert "utterance 0 (first at frame 3), utterance 1 (first at frame 1)" in str(err.value)


def test_check_inputs_accepts_nan_in_padding_and_returns_int64_cpu_lengths():
    x = _nan_at(1, 3)  # utterance 1 has 3 frames: frames 3 and 4 are padding
    x[1, 4] = math.inf
    for lengths in (LENGTHS, LENGTHS.int(), [5, 3], (5, 3)):
        out = check_inputs(x, lengths, GRAPHS)
        assert out.dtype == torch.int64 and out.device == torch.device("cpu")
        assert out.tolist() == [5, 3]
    check_inputs(LOG_PROBS.double(), LENGTHS, GRAPHS)  # any floating dtype


# ---------------------------------------------------------------------------------------------- intersect


def _single_total(fsa, scores, length, gamma):
    """Log-semiring total of one graph against one utterance's scores, by plain k2 calls."""
    fsa = fsa.clone()
    fsa.scores = fsa.scores * gamma
    dense = k2.DenseFsaVec(scores[None, :length], torch.tensor([[0, 0, length]], dtype=torch.int32))
    lattice = k2.intersect_dense(k2.create_fsa_vec([fsa]), dense, output_beam=math.inf)
    return float(lattice.get_tot_scores(log_semiring=True, use_double_scores=True)[0])


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_intersect_maps_each_lattice_to_its_batch_row_and_leaves_out_infeasible(gamma):
    topo = HmmTopology(5, label_loop=0.6, silence_loop=0.9)
    transcripts = [[[1, 2]], [[3], [4]], [[1, 1, 1, 1, 1, 1, 1, 1]], [[2]], [[4, 3, 2]]]
    lengths = torch.tensor([4, 7, 5, 7, 6])  # any order, a tie; utterance 2 needs 8 frames
    scores = torch.randn(5, 7, 5, generator=torch.Generator().manual_seed(1)).log_softmax(-1)
    graphs = topo.compile(transcripts)
    inter = intersect(scores, lengths, graphs, gamma, FULL_SUM_BEAM)
    assert sorted(inter.indices.tolist()) == [0, 1, 3, 4]
    assert inter.lattice.shape[0] == 4
    totals = inter.lattice.get_tot_scores(log_semiring=True, use_double_scores=True)
    for k, b in enumerate(inter.indices.tolist()):
        expected = _single_total(topo.compile([transcripts[b]]).fsa[0], scores[b], int(lengths[b]), gamma)
        assert float(totals[k]) == pytest.approx(expected, abs=1e-4)
    # the totals differ between utterances, so the mapping above could not pass by accident
    assert len({round(float(t), 3) for t in totals}) == 4


def test_intersect_with_nothing_feasible():
    graphs = CtcTopology(4).compile([[[1, 1]], [[1, 2, 3]]])
    inter = intersect(LOG_PROBS, torch.tensor([2, 2]), graphs, 1.0, FULL_SUM_BEAM)
    assert inter.lattice is None and inter.indices.tolist() == []


# ---------------------------------------------------------------------------------------------- Scales


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(posterior_scale=math.nan), "posterior_scale must be a finite number, got nan"),
        (dict(prior_scale=math.inf), "prior_scale must be a finite number, got inf"),
        (dict(transition_scale=-math.inf), "transition_scale must be a finite number, got -inf"),
        (dict(transition_scale="1"), "transition_scale must be a finite number, got '1'"),
        (dict(posterior_scale=True), "posterior_scale must be a finite number, got True"),
        (dict(posterior_scale=torch.tensor(1.0)), "posterior_scale must be a finite number"),
        (dict(log_prior=[0.0, 0.0]), "log_prior must be a torch.Tensor, got list"),
    ],
)
def test_scales_refuse_bad_values(kwargs, message):
    with pytest.raises(FsalignError) as err:
        Scales(**kwargs)
    assert message in str(err.value)


def test_scales_store_floats():
    s = Scales(2, 0, None, 1)
    assert (s.posterior_scale, s.prior_scale, s.transition_scale) == (2.0, 0.0, 1.0)
    assert all(type(v) is float for v in (s.posterior_scale, s.prior_scale, s.transition_scale))


@pytest.mark.parametrize("value", [np.float32(0.5), np.int64(2)], ids=["float32", "int64"])
def test_scales_accept_numpy_scalars(value):
    assert Scales(posterior_scale=value).posterior_scale == float(value)


@pytest.mark.parametrize("per_utterance", [False, True])
def test_dense_is_scaled_posteriors_minus_scaled_prior(per_utterance):
    B, T, C = 2, 3, 4
    lp = torch.randn(B, T, C, generator=GEN, dtype=torch.float64).log_softmax(-1)
    prior = torch.randn(B, C, generator=GEN).log_softmax(-1) if per_utterance else torch.randn(C, generator=GEN)
    out = Scales(0.7, 0.3, prior).dense(lp)
    assert out.dtype == torch.float32 and out.shape == (B, T, C)
    for b in range(B):
        for t in range(T):
            for c in range(C):
                p = prior[b, c] if per_utterance else prior[c]
                assert float(out[b, t, c]) == pytest.approx(0.7 * float(lp[b, t, c]) - 0.3 * float(p), abs=1e-6)


def test_dense_without_prior_term():
    lp = LOG_PROBS.double()
    torch.testing.assert_close(Scales().dense(lp), LOG_PROBS)
    torch.testing.assert_close(Scales(posterior_scale=0.5).dense(lp), 0.5 * LOG_PROBS)
    # a log prior with β = 0 changes nothing
    torch.testing.assert_close(Scales(0.5, 0.0, torch.randn(4)).dense(lp), 0.5 * LOG_PROBS)


def test_dense_is_differentiable_in_log_probs_and_prior():
    lp = LOG_PROBS.clone().requires_grad_()
    prior = torch.zeros(4, requires_grad=True)
    Scales(0.7, 0.3, prior).dense(lp).sum().backward()
    torch.testing.assert_close(lp.grad, torch.full_like(lp, 0.7))
    torch.testing.assert_close(prior.grad, torch.full((4,), -0.3 * 2 * 5))  # -β per frame of each utterance


@pytest.mark.parametrize(
    "scales, message",
    [
        (Scales(prior_scale=0.5), "prior_scale=0.5 needs a log_prior of shape (C,) or (B, C)"),
        (Scales(prior_scale=0.5, log_prior=torch.zeros(3)), "log_prior must have shape (4,) or (2, 4), got (3,)"),
        (Scales(prior_scale=0.5, log_prior=torch.zeros(3, 4)), "got (3, 4)"),
        (Scales(prior_scale=0.5, log_prior=torch.zeros(2, 5, 4)), "got (2, 5, 4)"),
        (Scales(prior_scale=0.5, log_prior=torch.tensor([0.0, math.nan, 0.0, 0.0])), "log_prior contains NaN or inf"),
        (Scales(prior_scale=0.5, log_prior=torch.tensor([[0.0] * 4, [0.0, 0.0, -math.inf, 0.0]])), "NaN or inf"),
    ],
)
def test_dense_refuses_a_missing_or_malformed_prior(scales, message):
    with pytest.raises(FsalignError) as err:
        scales.dense(LOG_PROBS)
    assert message in str(err.value)


def test_detach_detaches_only_the_prior():
    prior = torch.randn(4, requires_grad=True)
    scales = Scales(0.5, 0.2, prior, 0.1)
    detached = scales.detach()
    assert not detached.log_prior.requires_grad and prior.requires_grad
    assert torch.equal(detached.log_prior, prior.detach())
    assert (detached.posterior_scale, detached.prior_scale, detached.transition_scale) == (0.5, 0.2, 0.1)
    no_prior = Scales(0.5)
    assert no_prior.detach() is no_prior
    assert scales.replace(prior_scale=0.0).prior_scale == 0.0 and scales.prior_scale == 0.2
