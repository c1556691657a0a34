"""Tests for fsalign.scores.normgrad: normalized gradients (eq. 8-11) against closed forms.

The loss is CTC. ``torch.nn.functional.ctc_loss`` returns ``p - v`` as its
gradient w.r.t. the log-probs (the gradient w.r.t. the logits of a
log_softmax), not the true ``-v``; ``_TrueGradCtc`` turns it into the true
gradient (checked against float64 finite differences below), as k2's full-sum
gives it. The soft alignment used by the closed forms is read independently
from torch's native gradient: ``v = exp(q) - grad_q ctc_loss(q)``.
"""
import functools

import pytest
import torch
from torch.nn import functional as F

from fsalign.errors import FsalignError
from fsalign.scores.normgrad import normed_grad_log_softmax
from fsalign.scores.posterior import blank_separated_log_probs

DTYPE = torch.float64


class _TrueGradCtc(torch.autograd.Function):
    """Summed CTC NLL of scores q (B, T, C) whose backward is the true gradient -v."""

    @staticmethod
    def forward(ctx, scores, targets, lengths, target_lengths):
        with torch.enable_grad():
            q = scores.detach().requires_grad_(True)
            nll = F.ctc_loss(q.transpose(0, 1), targets, lengths, target_lengths, reduction="sum")
            (grad_torch,) = torch.autograd.grad(nll, q)
        mask = (torch.arange(q.shape[1]) < lengths[:, None]).unsqueeze(-1)
        ctx.save_for_backward((grad_torch - q.exp()).masked_fill(~mask, 0.0))
        return nll.detach()

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None


def _ctc_value(scores, batch):
    with torch.no_grad():
        return F.ctc_loss(
            scores.transpose(0, 1), batch["targets"], batch["lengths"], batch["target_lengths"], reduction="sum"
        )


def _ctc(scores, batch):
    return _TrueGradCtc.apply(scores, batch["targets"], batch["lengths"], batch["target_lengths"])


def _soft_alignment(scores, batch):
    """v (B, T, C) from torch's own CTC gradient, zero on padding."""
    q = scores.detach().requires_grad_(True)
    nll = F.ctc_loss(q.transpose(0, 1), batch["targets"], batch["lengths"], batch["target_lengths"], reduction="sum")
    (grad_torch,) = torch.autograd.grad(nll, q)
    mask = (torch.arange(q.shape[1]) < batch["lengths"][:, None]).unsqueeze(-1)
    # exp(q) - grad can round to -1e-17 where v is 0: a probability, so clamp at 0
    return (q.exp() - grad_torch).clamp(min=0.0).masked_fill(~mask, 0.0).detach()


def _factor_reference(v, lengths, v_min, v_max, scope):
    """Eq. (10)-(11) written with loops: (B, C) factor per sequence."""
    num_labels = v.shape[-1]
    if scope == "batch":
        v_bar = torch.cat([v[b, :n] for b, n in enumerate(lengths.tolist())]).mean(0)
        v_bars = [v_bar] * len(lengths)
    else:
        v_bars = [v[b, :n].mean(0) for b, n in enumerate(lengths.tolist())]
    factors = []
    for v_bar in v_bars:
        f = torch.empty(num_labels, dtype=v.dtype)
        for j in range(num_labels):
            f[j] = v_max if v_bar[j] == 0 else min(max(1.0 / (float(v_bar[j]) * num_labels), v_min), v_max)
        factors.append(f)
    return torch.stack(factors)


def _batch(seed=0, num_labels=9, small=False):
    """Unsorted lengths, padding; labels 6.. are never used (their vbar is 0)."""
    gen = torch.Generator().manual_seed(seed)
    if small:  # for finite differences
        lengths, target_lengths, num_frames = torch.tensor([4, 6, 3]), torch.tensor([2, 3, 1]), 6
    else:
        lengths, target_lengths, num_frames = torch.tensor([7, 12, 5, 10]), torch.tensor([3, 4, 2, 1]), 12
    targets = torch.randint(1, min(6, num_labels), (len(lengths), 4), generator=gen)
    targets[1, :3] = torch.tensor([2, 2, 3])  # a repeat: needs a blank in between
    logits = torch.randn(len(lengths), num_frames, num_labels, generator=gen, dtype=DTYPE) * 2
    logits[torch.arange(num_frames) >= lengths[:, None]] = 1e3  # garbage on padding frames
    return dict(lengths=lengths, target_lengths=target_lengths, targets=targets), logits


def _finite_differences(fn, x, lengths, eps=1e-6):
    """Central differences of the scalar fn at x (B, T, C), on valid frames only."""
    fd = torch.zeros_like(x)
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):
            for j in range(x.shape[-1]):
                plus, minus = x.clone(), x.clone()
                plus[b, t, j] += eps
                minus[b, t, j] -= eps
                fd[b, t, j] = (float(fn(plus)) - float(fn(minus))) / (2 * eps)
    return fd


def test_true_grad_ctc_matches_finite_differences():
    batch, logits = _batch(num_labels=5, small=True)
    # Normalised log-probs, differentiated as free inputs (the true gradient is -v).
    lp = logits.log_softmax(-1).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(_ctc(lp, batch), lp)
    fd = _finite_differences(lambda x: _ctc_value(x, batch), lp.detach(), batch["lengths"])
    torch.testing.assert_close(grad, fd, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(_ctc(lp, batch), _ctc_value(lp, batch))


@pytest.mark.parametrize("scope", ["batch", "seq"])
@pytest.mark.parametrize("alpha,v_min,v_max", [(1.0, 0.5, 1.1), (0.7, 0.0, 1e3), (1.0, 0.8, 0.9)])
def test_normed_grad_softmax_matches_eq11(scope, alpha, v_min, v_max):
    batch, logits = _batch()
    logits.requires_grad_(True)
    lp = normed_grad_log_softmax(logits, batch["lengths"], v_min=v_min, v_max=v_max, scope=scope)
    torch.testing.assert_close(lp, logits.log_softmax(-1))  # forward unchanged
    (grad,) = torch.autograd.grad(_ctc(alpha * lp, batch) / 4, logits)  # mean over sequences: scale cancels in v

    p = logits.detach().softmax(-1)
    v = _soft_alignment(alpha * logits.detach().log_softmax(-1), batch)
    factor = _factor_reference(v, batch["lengths"], v_min, v_max, scope)
    mask = (torch.arange(12) < batch["lengths"][:, None]).unsqueeze(-1)
    expected = (alpha / 4 * (p - v) * factor.unsqueeze(1)).masked_fill(~mask, 0.0)  # eq. 8 times eq. 11
    torch.testing.assert_close(grad, expected)
    assert (factor[:, 6:] == v_max).all()  # unused labels: vbar = 0 -> v_max


@pytest.mark.parametrize("scope", ["batch", "seq"])
def test_normed_grad_blank_separated_matches_eq21(scope):
    batch, logits = _batch(seed=1)
    logits.requires_grad_(True)
    blank = 0
    fn = functools.partial(blank_separated_log_probs, blank=blank)
    lp = normed_grad_log_softmax(logits, batch["lengths"], scope=scope, log_probs_fn=fn)
    torch.testing.assert_close(lp, fn(logits))
    (grad,) = torch.autograd.grad(_ctc(lp, batch), logits)

    z = logits.detach()
    v = _soft_alignment(fn(z), batch)
    factor = _factor_reference(v, batch["lengths"], 0.5, 1.1, scope)
    v_blank = v[..., :1]
    sig = torch.sigmoid(z[..., :1])
    soft_a = z[..., 1:].softmax(-1)
    # eq. (21) is the gradient of sum_i v_i log p'_i; the loss is its negative.
    eq21 = torch.cat([v_blank - sig, (v[..., 1:] / (1 - v_blank) - soft_a) * (1 - v_blank)], dim=-1)
    mask = (torch.arange(12) < batch["lengths"][:, None]).unsqueeze(-1)
    torch.testing.assert_close(grad, (-eq21 * factor.unsqueeze(1)).masked_fill(~mask, 0.0))


def test_normed_grad_equals_finite_difference_gradient_times_factor():
    """Plain gradient by float64 central differences of the loss value, times eq. (11)."""
    batch, logits = _batch(seed=2, num_labels=5, small=True)
    lengths = batch["lengths"]
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(_ctc(normed_grad_log_softmax(logits, lengths, scope="seq"), batch), logits)

    z0 = logits.detach()
    fd = _finite_differences(lambda z: _ctc_value(z.log_softmax(-1), batch), z0, lengths)
    factor = _factor_reference(_soft_alignment(z0.log_softmax(-1), batch), lengths, 0.5, 1.1, "seq")
    torch.testing.assert_close(grad, fd * factor.unsqueeze(1), atol=1e-6, rtol=1e-5)


def test_frames_without_gradient_do_not_count():
    """A sequence the loss ignores neither gets gradient nor changes the batch vbar."""
    batch, logits = _batch(seed=3)
    logits.requires_grad_(True)
    weights = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=DTYPE)

    def per_seq_losses(lp, idx):
        sub = {k: v[idx] for k, v in batch.items()}
        return _ctc(lp[idx], sub)

    lp = normed_grad_log_softmax(logits, batch["lengths"])
    total = sum(weights[b] * per_seq_losses(lp, [b]) for b in range(4))
    (grad,) = torch.autograd.grad(total, logits)
    keep = [0, 1, 3]
    sub_logits = logits.detach()[keep].requires_grad_(True)
    sub_lp = normed_grad_log_softmax(sub_logits, batch["lengths"][keep])
    (grad_sub,) = torch.autograd.grad(_ctc(sub_lp, {k: v[keep] for k, v in batch.items()}), sub_logits)
    assert (grad[2] == 0).all()
    torch.testing.assert_close(grad[keep], grad_sub)


def test_torch_ctc_loss_gradient_is_rejected():
    batch, logits = _batch()
    logits.requires_grad_(True)
    lp = normed_grad_log_softmax(logits, batch["lengths"])
    nll = F.ctc_loss(lp.transpose(0, 1), batch["targets"], batch["lengths"], batch["target_lengths"], reduction="sum")
    with pytest.raises(FsalignError, match="ctc_loss"):
        nll.backward()


def test_rejects_bad_arguments():
    logits = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="scope"):
        normed_grad_log_softmax(logits, torch.tensor([3, 2]), scope="utterance")
    with pytest.raises(ValueError, match="v_min"):
        normed_grad_log_softmax(logits, torch.tensor([3, 2]), v_min=2.0, v_max=1.0)
    with pytest.raises(ValueError, match="lengths"):
        normed_grad_log_softmax(logits, torch.tensor([3, 4]))


# Section 3: clean one-hot frames (eq. 26 with no noise), FFNN softmax(x W + b) (eq. 28), W = c * I, b = 0.
_WORDS = {"helo": [1, 2, 3, 4], "world": [5, 4, 6, 3, 7], "howe": [1, 4, 5, 2], "are": [8, 6, 2], "you": [9, 4, 10]}


def _hmm_like_alignment(words, repetitions, silences):
    """Silence (blank, 0) before/between/after words; every character repeated."""
    labels = []
    for k, word in enumerate(words):
        labels += [0] * silences[k]
        for token in _WORDS[word]:
            labels += [token] * repetitions
    return labels + [0] * silences[len(words)]


def _section3_setup():
    utterances = [(["helo", "world"], 2, [3, 2, 4]), (["are"], 3, [5, 6]), (["you", "howe", "are"], 2, [1, 2, 0, 3])]
    alignments = [_hmm_like_alignment(*u) for u in utterances]
    lengths = torch.tensor([len(a) for a in alignments])
    ref = torch.zeros(len(alignments), int(lengths.max()), dtype=torch.long)
    for b, a in enumerate(alignments):
        ref[b, : len(a)] = torch.tensor(a)
    token_seqs = [[tok for w in u[0] for tok in _WORDS[w]] for u in utterances]
    targets = torch.zeros(len(token_seqs), max(map(len, token_seqs)), dtype=torch.long)
    for b, seq in enumerate(token_seqs):
        targets[b, : len(seq)] = torch.tensor(seq)
    batch = dict(lengths=lengths, targets=targets, target_lengths=torch.tensor([len(s) for s in token_seqs]))
    return batch, F.one_hot(ref, 11).to(DTYPE)


def _bias_gradient(x, batch, c, **normed):
    weight = torch.eye(11, dtype=DTYPE) * c
    bias = torch.zeros(11, dtype=DTYPE, requires_grad=True)
    logits = x @ weight + bias
    lp = normed_grad_log_softmax(logits, batch["lengths"], **normed) if normed else logits.log_softmax(-1)
    (grad,) = torch.autograd.grad(_ctc(lp, batch), bias)
    return grad, logits.detach()


def _is_uniform(vec, rel=1e-6):
    return float(vec.max() - vec.min()) <= rel * float(vec.abs().max())


def test_section3_bias_gradient_balance_at_perfect_init():
    """What eq. (11) makes uniform across classes, and what it cannot.

    grad_b = sum_t factor * (p_t - v_t). Its target ("pull") part, factor * sum_t v_t,
    is N / C for every class when the clamp is inactive (factor = (vbar C)^-1):
    uniform by construction, as sec. 3 says. For plain CTC the pull part is the
    soft label counts (blank dominates). The whole grad_b cannot be uniform
    unless it is zero: for a softmax sum_j grad_b,j = 0, so a uniform plain
    gradient is 0, i.e. pbar = vbar, and then the normed one is 0 too. The test
    therefore uses v_min = 0 and a v_max above every (vbar C)^-1 (checked), and
    shows that the paper's clamp (0.5, 1.1) is active here and breaks the balance.
    """
    batch, x = _section3_setup()
    lengths = batch["lengths"]
    mask = torch.arange(x.shape[1]) < lengths[:, None]
    num_frames, num_labels = int(lengths.sum()), 11
    grad_plain, logits = _bias_gradient(x, batch, c=5.0)
    p_sum = logits.softmax(-1)[mask].sum(0)
    v = _soft_alignment(logits.log_softmax(-1), batch)
    v_bar = v[mask].mean(0)
    assert float(torch.reciprocal(v_bar * num_labels).max()) < 100.0  # so v_max = 100 never clamps

    pull_plain = p_sum - grad_plain
    torch.testing.assert_close(pull_plain, v[mask].sum(0))
    assert not _is_uniform(pull_plain, rel=0.5) and not _is_uniform(grad_plain, rel=0.5)
    torch.testing.assert_close(grad_plain.sum(), torch.zeros((), dtype=DTYPE), atol=1e-9, rtol=0)

    grad_normed, _ = _bias_gradient(x, batch, c=5.0, v_min=0.0, v_max=100.0)
    factor = torch.reciprocal(v_bar * num_labels)
    pull_normed = factor * p_sum - grad_normed
    torch.testing.assert_close(pull_normed, torch.full_like(pull_normed, num_frames / num_labels))
    # The whole gradient: (N / C) (pbar / vbar - 1), non-uniform because pbar != vbar.
    p_bar = p_sum / num_frames
    torch.testing.assert_close(grad_normed, num_frames / num_labels * (p_bar / v_bar - 1))
    assert not _is_uniform(grad_normed, rel=0.5)

    grad_paper, _ = _bias_gradient(x, batch, c=5.0, v_min=0.5, v_max=1.1)
    factor_paper = factor.clamp(0.5, 1.1)
    assert (factor_paper != factor).any()
    assert not _is_uniform(factor_paper * p_sum - grad_paper, rel=0.1)


@pytest.mark.parametrize("scope", ["batch", "seq"])
def test_normed_grad_with_full_sum_loss_and_infeasible_utterance(scope):
    """With fsalign.full_sum_loss (k2) and a posterior scale; v from fsalign.soft_alignment.

    The third utterance is too short for its transcript: its loss is +inf with zero
    gradient, so its frames must not count in vbar.
    """
    from fsalign.engine.builtin import CtcTopology
    from fsalign.engine.fullsum import full_sum_loss, soft_alignment

    torch.manual_seed(0)
    num_labels, alpha = 6, 0.7
    graphs = CtcTopology(num_labels, blank=0).compile([[[1, 2], [3]], [[2, 2]], [[1, 2, 3, 4, 5, 1, 2, 3]]])
    lengths = torch.tensor([6, 9, 5])
    logits = torch.randn(3, 9, num_labels, requires_grad=True)
    loss = full_sum_loss(normed_grad_log_softmax(logits, lengths, scope=scope), lengths, graphs, posterior_scale=alpha)
    assert torch.isinf(loss[2]) and torch.isfinite(loss[:2]).all()
    (grad,) = torch.autograd.grad(loss[:2].sum(), logits)

    v = soft_alignment(logits.detach().log_softmax(-1), lengths, graphs, posterior_scale=alpha)
    live_lengths = torch.tensor([6, 9])
    factor = _factor_reference(v[:2].double(), live_lengths, 0.5, 1.1, scope).float()
    mask = (torch.arange(9) < live_lengths[:, None]).unsqueeze(-1)
    expected = (alpha * (logits.detach()[:2].softmax(-1) - v[:2]) * factor.unsqueeze(1)).masked_fill(~mask, 0.0)
    torch.testing.assert_close(grad[:2], expected, atol=1e-6, rtol=1e-5)
    assert (grad[2] == 0).all()
