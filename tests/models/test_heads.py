"""Tests for fsalign.models.heads: fast paths of appendix A.6 equal the full computation."""
import pytest
import torch
from torch.nn import functional as F

from fsalign.models.heads import PAD_LABEL, BlankSeparatedHead, SoftmaxHead

LENGTHS = torch.tensor([17, 40, 0, 31])  # unsorted, with an empty sequence; T = 40


def _setup(blank: int, num_labels: int = 13, d_model: int = 6, seed: int = 0):
    torch.manual_seed(seed)
    head = BlankSeparatedHead(d_model, num_labels, blank=blank).double()
    h = torch.randn(len(LENGTHS), int(LENGTHS.max()), d_model, dtype=torch.float64)
    # Spread the blank logit around 0 so both branches (p(eps) > 0.5 and <= 0.5) occur,
    # and make some label frames beat blank and some not.
    with torch.no_grad():
        head.linear.weight *= 8.0  # peaked label softmax: labels can win at p(eps) close to 0.5
        head.linear.weight[blank] *= 0.25
    mask = torch.arange(h.shape[1]) < LENGTHS[:, None]
    return head, h, mask


@pytest.mark.parametrize("blank", [0, 5, 12])
def test_greedy_fast_equals_full_argmax(blank):
    head, h, mask = _setup(blank)
    z_blank = head.blank_logit(h)[mask]
    assert (z_blank > 0).any() and (z_blank <= 0).any(), "test data must exercise both branches"
    full_log_probs = head.log_probs(h)
    full_best, full_labels = full_log_probs.max(dim=-1)
    p_blank = torch.sigmoid(head.blank_logit(h))
    # Both outcomes of the comparison in the p(eps) <= 0.5 branch, including a label
    # winning at p(eps) close to 0.5 (a threshold below 0.5 would get it wrong).
    assert ((full_labels == blank) & mask & (p_blank <= 0.5)).any()
    assert ((full_labels != blank) & mask & (p_blank > 0.4)).any()

    labels = head.greedy_labels(h, LENGTHS)
    assert torch.equal(labels[mask], full_labels[mask])
    assert (labels[~mask] == PAD_LABEL).all()

    labels2, probs = head.greedy_with_probs(h, LENGTHS)
    assert torch.equal(labels2, labels)
    torch.testing.assert_close(probs[mask], full_best.exp()[mask])
    assert (probs[~mask] == 0).all()


def test_greedy_softmax_head_matches_argmax():
    torch.manual_seed(1)
    head = SoftmaxHead(6, 11).double()
    h = torch.randn(len(LENGTHS), int(LENGTHS.max()), 6, dtype=torch.float64)
    mask = torch.arange(h.shape[1]) < LENGTHS[:, None]
    probs_ref = torch.softmax(h @ head.linear.weight.T + head.linear.bias, dim=-1)
    labels, probs = head.greedy_with_probs(h, LENGTHS)
    assert torch.equal(labels[mask], probs_ref.argmax(-1)[mask])
    assert torch.equal(head.greedy_labels(h, LENGTHS), labels)
    torch.testing.assert_close(probs[mask], probs_ref.max(-1).values[mask])
    assert (labels[~mask] == PAD_LABEL).all()


@pytest.mark.parametrize("blank", [0, 7])
def test_framewise_ce_fast_equals_full_values_and_gradients(blank):
    head, h, mask = _setup(blank)
    torch.manual_seed(3)
    ref = torch.randint(0, head.num_labels, mask.shape)
    ref[torch.rand(mask.shape) < 0.6] = blank  # mostly blank, like a CTC alignment
    ref[~mask] = -1  # padding values must be ignored
    h.requires_grad_(True)

    fast = head.framewise_ce(h, LENGTHS, ref)
    grads_fast = torch.autograd.grad(fast.sum(), [h, head.linear.weight, head.linear.bias])

    # Full computation, written independently: sigmoid/softmax probabilities (eq. 15).
    logits = h @ head.linear.weight.T + head.linear.bias
    p_blank = torch.sigmoid(logits[..., blank])
    others = [c for c in range(head.num_labels) if c != blank]
    p_labels = torch.softmax(logits[..., others], dim=-1) * (1 - p_blank).unsqueeze(-1)
    probs = torch.zeros_like(logits)
    probs[..., blank] = p_blank
    probs[..., others] = p_labels
    picked = probs.gather(-1, ref.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    full = -(torch.where(mask, picked.log(), torch.zeros_like(picked))).sum(1)
    grads_full = torch.autograd.grad(full.sum(), [h, head.linear.weight, head.linear.bias])

    torch.testing.assert_close(fast, full)
    assert fast[2] == 0  # empty sequence
    for g_fast, g_full in zip(grads_fast, grads_full):
        torch.testing.assert_close(g_fast, g_full)
    assert (grads_fast[0][~mask] == 0).all()


def test_framewise_ce_softmax_head_matches_cross_entropy():
    torch.manual_seed(2)
    head = SoftmaxHead(6, 11).double()
    h = torch.randn(len(LENGTHS), int(LENGTHS.max()), 6, dtype=torch.float64)
    mask = torch.arange(h.shape[1]) < LENGTHS[:, None]
    ref = torch.randint(0, 11, mask.shape)
    ce = head.framewise_ce(h, LENGTHS, ref)
    for b, length in enumerate(LENGTHS.tolist()):
        expected = F.cross_entropy(head(h[b, :length]), ref[b, :length], reduction="sum")
        torch.testing.assert_close(ce[b], expected)


def test_framewise_ce_rejects_out_of_range_reference():
    head, h, mask = _setup(0)
    ref = torch.zeros(mask.shape, dtype=torch.long)
    ref[1, 3] = head.num_labels
    with pytest.raises(ValueError, match="ref_labels"):
        head.framewise_ce(h, LENGTHS, ref)
    with pytest.raises(ValueError, match="lengths"):
        head.greedy_labels(h, torch.tensor([1, 2, 3, 41]))


def test_head_rejects_bad_blank():
    with pytest.raises(ValueError, match="blank"):
        BlankSeparatedHead(4, 5, blank=5)
