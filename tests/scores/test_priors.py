"""Tests for fsalign.scores.priors: blank separation (eq. 15-17, 20-21, 29), priors (eq. 6), blank penalty."""
import math

import pytest
import torch

from fsalign.scores.posterior import apply_blank_penalty, blank_separated_log_probs
from fsalign.scores.priors import (
    CorpusPrior,
    RunningPrior,
    batch_log_prior,
    estimate_corpus_prior,
    prior_from_alignment,
    prior_from_transcripts,
    sequence_log_prior,
)

DTYPE = torch.float64
LENGTHS = torch.tensor([4, 7, 0, 2])  # unsorted, one empty sequence; T = 7


def _log_probs(seed=0, num_labels=5, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    lp = (torch.randn(len(LENGTHS), 7, num_labels, generator=gen, dtype=DTYPE) * 3).log_softmax(-1)
    lp[torch.arange(7) >= LENGTHS[:, None]] = 50.0  # garbage on padding: must never count
    return lp.requires_grad_(requires_grad)


def _mask():
    return torch.arange(7) < LENGTHS[:, None]


# --- blank separation -------------------------------------------------------------------------


@pytest.mark.parametrize("blank", [0, 3, -1])
def test_blank_separated_normalises_and_equals_eq15(blank):
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 7, dtype=DTYPE) * 4
    lp = blank_separated_log_probs(logits, blank=blank)
    torch.testing.assert_close(lp.logsumexp(-1), torch.zeros(3, 6, dtype=DTYPE))
    b = blank % 7
    others = [c for c in range(7) if c != b]
    p_blank = 1 / (1 + torch.exp(-logits[..., b]))  # eq. 16
    p_a = torch.exp(logits[..., others]) / torch.exp(logits[..., others]).sum(-1, keepdim=True)  # eq. 17
    torch.testing.assert_close(lp[..., b].exp(), p_blank)
    torch.testing.assert_close(lp[..., others].exp(), (1 - p_blank).unsqueeze(-1) * p_a)  # eq. 15


def test_blank_separated_is_stable_for_extreme_logits():
    logits = torch.tensor([[[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [-3e4, 2e4, 2e4]]])
    lp = blank_separated_log_probs(logits, blank=0)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp.logsumexp(-1), torch.zeros(1, 3))
    logits.requires_grad_(True)
    blank_separated_log_probs(logits).sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("blank", [0, 4])
def test_blank_separated_gradient_matches_eq21_and_softmax_eq20(blank):
    torch.manual_seed(1)
    z = torch.randn(2, 5, 6, dtype=DTYPE, requires_grad=True)
    v = torch.rand(2, 5, 6, dtype=DTYPE)
    v = v / v.sum(-1, keepdim=True)  # a soft alignment: a distribution per frame
    (grad_sep,) = torch.autograd.grad((v * blank_separated_log_probs(z, blank=blank)).sum(), z)
    (grad_full,) = torch.autograd.grad((v * z.log_softmax(-1)).sum(), z)
    zd = z.detach()
    others = [c for c in range(6) if c != blank]
    v_blank = v[..., blank : blank + 1]
    expected = torch.empty_like(zd)
    expected[..., blank] = (v_blank - torch.sigmoid(zd[..., blank : blank + 1])).squeeze(-1)
    expected[..., others] = (v[..., others] / (1 - v_blank) - zd[..., others].softmax(-1)) * (1 - v_blank)
    torch.testing.assert_close(grad_sep, expected)  # eq. 21
    torch.testing.assert_close(grad_full, v - zd.softmax(-1))  # eq. 20


def test_blank_separated_gradcheck_float64():
    z = torch.randn(2, 3, 5, dtype=DTYPE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: blank_separated_log_probs(x, blank=2), (z,))


# --- blank penalty ------------------------------------------------------------------


def test_blank_penalty_hand_checked():
    # p = (0.5, 0.25, 0.25); blank (column 0) times 3 -> (1.5, 0.25, 0.25) / 2.
    lp = torch.tensor([0.5, 0.25, 0.25], dtype=DTYPE).log().view(1, 1, 3)
    out = apply_blank_penalty(lp, blank=0, penalty=math.log(3.0))
    torch.testing.assert_close(out.exp().flatten(), torch.tensor([0.75, 0.125, 0.125], dtype=DTYPE))


def test_blank_penalty_same_on_logits_log_probs_and_blank_separated():
    torch.manual_seed(2)
    z = torch.randn(2, 4, 6, dtype=DTYPE) * 3
    shifted = z.clone()
    shifted[..., 3] -= 10.0
    expected = shifted.log_softmax(-1)
    torch.testing.assert_close(apply_blank_penalty(z, blank=3, penalty=-10.0), expected)
    torch.testing.assert_close(apply_blank_penalty(z.log_softmax(-1), blank=3, penalty=-10.0), expected)
    # Blank-separated: renormalising equals shifting the sigmoid logit.
    torch.testing.assert_close(
        apply_blank_penalty(blank_separated_log_probs(z, blank=3), blank=3, penalty=-10.0),
        blank_separated_log_probs(shifted, blank=3),
    )


# --- priors -------------------------------------------------------------------------------------


def _mean_prob_loop(lp, lengths):
    return [lp[b, :n].exp().mean(0) for b, n in enumerate(lengths.tolist())]


def test_sequence_and_batch_prior_values():
    lp = _log_probs()
    seq = sequence_log_prior(lp, LENGTHS)
    for b, mean in enumerate(_mean_prob_loop(lp, LENGTHS)):
        if LENGTHS[b] > 0:
            torch.testing.assert_close(seq[b], mean.log())
    torch.testing.assert_close(seq[2], torch.full((5,), -math.log(5), dtype=DTYPE))  # empty -> uniform
    frames = torch.cat([lp[b, :n] for b, n in enumerate(LENGTHS.tolist())])
    torch.testing.assert_close(batch_log_prior(lp, LENGTHS), frames.exp().mean(0).log())


def _prior_loss(lp, w, prior, beta, per_sequence):
    """-sum_valid w_btj (lp_btj - beta * prior_j): a framewise loss with fixed soft targets w."""
    prior = prior.unsqueeze(1) if per_sequence else prior.view(1, 1, -1)
    return -(w * _mask().unsqueeze(-1) * (lp - beta * prior)).sum()


@pytest.mark.parametrize("per_sequence", [True, False])
def test_prior_stop_grad_changes_gradient_as_closed_form(per_sequence):
    beta = 0.6
    lp = _log_probs(seed=3, requires_grad=True)
    w = torch.rand(lp.shape, dtype=DTYPE, generator=torch.Generator().manual_seed(4))
    estimate = sequence_log_prior if per_sequence else batch_log_prior
    mask = _mask().unsqueeze(-1)
    p = lp.detach().exp() * mask
    w_valid = w * mask
    grads = {}
    for stop_grad in (True, False):
        prior = estimate(lp, LENGTHS, stop_grad=stop_grad)
        assert prior.requires_grad is not stop_grad
        (grads[stop_grad],) = torch.autograd.grad(_prior_loss(lp, w, prior, beta, per_sequence), lp)
    torch.testing.assert_close(grads[True], -w_valid)
    # d log pbar_j / d lp_tj = p_tj / (N pbar_j); N pbar_j = sum of p_tj over the frames averaged.
    if per_sequence:
        extra = beta * w_valid.sum(1, keepdim=True) * p / p.sum(1, keepdim=True).clamp(min=1e-300)
    else:
        extra = beta * w_valid.sum((0, 1)) * p / p.sum((0, 1))
    torch.testing.assert_close(grads[False], -w_valid + extra)
    assert not torch.allclose(grads[True], grads[False])
    assert (grads[False][~_mask()] == 0).all() and torch.isfinite(grads[False]).all()


@pytest.mark.parametrize("per_sequence", [True, False])
def test_prior_without_stop_grad_matches_finite_differences(per_sequence):
    estimate = sequence_log_prior if per_sequence else batch_log_prior
    lp = _log_probs(seed=5, num_labels=3, requires_grad=True)
    w = torch.rand(lp.shape, dtype=DTYPE, generator=torch.Generator().manual_seed(6))

    def loss(x):
        return _prior_loss(x, w, estimate(x, LENGTHS, stop_grad=False), 0.8, per_sequence)

    (grad,) = torch.autograd.grad(loss(lp), lp)
    x0, eps = lp.detach(), 1e-6
    for b, t in [(0, 0), (1, 6), (3, 1)]:
        for j in range(3):
            plus, minus = x0.clone(), x0.clone()
            plus[b, t, j] += eps
            minus[b, t, j] -= eps
            fd = (loss(plus) - loss(minus)) / (2 * eps)
            torch.testing.assert_close(grad[b, t, j], fd, atol=1e-7, rtol=1e-6)


def test_prior_from_alignment_hand_checked():
    labels = torch.tensor([[0, 0, 1, 2, 7], [1, 0, 7, 7, 7]])  # 7 = padding garbage
    lengths = torch.tensor([4, 2])
    # counts (blank 3, label1 2, label2 1, label3 0) + 1 smoothing = (4, 3, 2, 1) / 10
    expected = torch.tensor([0.4, 0.3, 0.2, 0.1]).log()
    torch.testing.assert_close(prior_from_alignment(labels, lengths, num_labels=4), expected)
    torch.testing.assert_close(
        prior_from_alignment(labels, lengths, num_labels=4, smoothing=0.0)[:3], torch.tensor([0.5, 2 / 6, 1 / 6]).log()
    )
    with pytest.raises(ValueError, match="labels"):
        prior_from_alignment(labels, torch.tensor([5, 2]), num_labels=4)


def test_prior_from_transcripts_hand_checked():
    transcripts = [[[1, 2], [2]], [[3]]]  # counts: 1 -> 1, 2 -> 2, 3 -> 1, 4 -> 0
    prior = prior_from_transcripts(transcripts, num_labels=5, silence=0, silence_ratio=0.25, smoothing=1.0)
    # (count + 1) / 8 of the 75% non-silence mass
    expected = torch.tensor([0.25, 0.75 * 2 / 8, 0.75 * 3 / 8, 0.75 * 2 / 8, 0.75 * 1 / 8]).log()
    torch.testing.assert_close(prior, expected)
    assert abs(float(prior.exp().sum()) - 1.0) < 1e-6
    with pytest.raises(ValueError, match="silence"):
        prior_from_transcripts([[[0, 1]]], num_labels=5, silence=0)
    with pytest.raises(ValueError, match="silence_ratio"):
        prior_from_transcripts(transcripts, num_labels=5, silence_ratio=1.0)


def test_running_prior_ema_and_state_dict():
    lp1, lp2 = _log_probs(seed=7, requires_grad=True), _log_probs(seed=8)
    running = RunningPrior(5, momentum=0.9)
    torch.testing.assert_close(running.log_prior, torch.full((5,), -math.log(5)))
    out1 = running.update(lp1, LENGTHS)
    assert not out1.requires_grad  # stop-grad by construction
    p1 = batch_log_prior(lp1, LENGTHS).exp()
    torch.testing.assert_close(out1, p1.log().float())  # first update: the batch average itself
    p2 = batch_log_prior(lp2, LENGTHS).exp()
    torch.testing.assert_close(running.update(lp2, LENGTHS), (0.9 * p1 + 0.1 * p2).log().float())

    restored = RunningPrior(5, momentum=0.9)
    restored.load_state_dict(running.state_dict())
    torch.testing.assert_close(restored.log_prior, running.log_prior)
    torch.testing.assert_close(restored.update(lp1, LENGTHS), running.update(lp1, LENGTHS))
    with pytest.raises(ValueError, match="columns"):
        running.update(torch.zeros(4, 7, 3), LENGTHS)


def test_corpus_prior_equals_average_over_all_frames():
    batches = [(_log_probs(seed=9, requires_grad=True), LENGTHS), (_log_probs(seed=10)[:2], torch.tensor([7, 1]))]
    frames = torch.cat([lp[b, :n] for lp, lengths in batches for b, n in enumerate(lengths.tolist())])
    expected = frames.detach().exp().mean(0).log().float()
    estimated = estimate_corpus_prior(batches)
    assert not estimated.requires_grad
    torch.testing.assert_close(estimated, expected)

    corpus = CorpusPrior(5)
    corpus.accumulate(*batches[0])
    restored = CorpusPrior(5)
    restored.load_state_dict(corpus.state_dict())  # e.g. saved with a checkpoint mid-way
    restored.accumulate(*batches[1])
    torch.testing.assert_close(restored.log_prior, expected)
    with pytest.raises(ValueError, match="no frames"):
        CorpusPrior(5).log_prior
    with pytest.raises(ValueError, match="no batches"):
        estimate_corpus_prior([])
