"""Tests of fsalign.scores.prefix: CTC prefix scores against brute-force enumeration, AED gathering, eq. 50."""
import itertools
import math

import pytest
import torch

from fsalign.scores.prefix import (
    aed_label_log_probs,
    ctc_prefix_log_probs,
    joint_label_log_probs,
)


def _collapse(path, blank):
    out, prev = [], None
    for y in path:
        if y != blank and y != prev:
            out.append(y)
        prev = y
    return out


def _brute_prefix_probs(probs, target, blank):
    """P(a_1^s), s = 1..S, by enumerating every y_1^t (definition in ctc_prefix_log_probs).

    Sum over t and y_1^t with B(y_1^{t-1}) = a_1^{s-1} and B(y_1^t) = a_1^s of prod p.
    """
    T, C = probs.shape
    S = len(target)
    out = [0.0] * S
    for t in range(1, T + 1):
        for path in itertools.product(range(C), repeat=t):
            before, now = _collapse(path[:-1], blank), _collapse(path, blank)
            s = len(now)
            if s >= 1 and s <= S and now == target[:s] and before == target[: s - 1]:
                out[s - 1] += math.prod(float(probs[k, path[k]]) for k in range(t))
    return out


def _brute_starts_with(probs, target, blank):
    """P(B(y_1^T) begins with a_1^s), s = 1..S: the second reading of the same quantity."""
    T, C = probs.shape
    out = [0.0] * len(target)
    for path in itertools.product(range(C), repeat=T):
        full = _collapse(path, blank)
        p = math.prod(float(probs[k, path[k]]) for k in range(T))
        for s in range(1, len(target) + 1):
            if full[:s] == target[:s]:
                out[s - 1] += p
    return out


def _conditional(prefix_probs):
    out, prev = [], 1.0
    for p in prefix_probs:
        out.append(math.log(p) - math.log(prev) if p > 0 else -math.inf)
        prev = p
    return out


CASES = [
    # (T, C, target, blank)
    (4, 3, [1, 2], 0),
    (5, 3, [1, 1, 2], 0),  # repeated label needs a blank
    (6, 3, [2, 2, 2], 0),
    (3, 2, [1], 0),  # S = 1
    (6, 3, [1, 2, 1, 2], 0),
    (4, 3, [0, 1], 2),  # blank in the last column
    (3, 3, [1, 1, 1], 0),  # infeasible tail: a_1^3 needs 5 frames
]


@pytest.mark.parametrize("T,C,target,blank", CASES)
def test_prefix_scores_match_brute_force(T, C, target, blank):
    g = torch.Generator().manual_seed(T * 100 + C * 10 + len(target))
    log_probs = torch.randn(1, T, C, generator=g, dtype=torch.float64).log_softmax(-1)
    got = ctc_prefix_log_probs(log_probs, torch.tensor([T]), torch.tensor([target]), torch.tensor([len(target)]), blank,
                               definition="onset")
    probs = log_probs[0].exp()
    ref_prefix = _brute_prefix_probs(probs, target, blank)
    ref_starts = _brute_starts_with(probs, target, blank)
    assert ref_prefix == pytest.approx(ref_starts, rel=1e-9, abs=1e-15)  # the two readings agree
    want = torch.tensor(_conditional(ref_prefix), dtype=torch.float64)
    assert torch.equal(torch.isinf(got[0]), torch.isinf(want))
    fin = torch.isfinite(want)
    torch.testing.assert_close(got[0][fin], want[fin], rtol=1e-10, atol=1e-10)


def _brute_forward_sums(probs, target, blank):
    """Eq. 23 read literally: sum over t <= T and y_1^t with B(y_1^t) = a_1^s of prod p, s = 0..S."""
    T, C = probs.shape
    out = [0.0] * (len(target) + 1)
    for t in range(1, T + 1):
        for path in itertools.product(range(C), repeat=t):
            now = _collapse(path, blank)
            if len(now) <= len(target) and now == target[: len(now)]:
                out[len(now)] += math.prod(float(probs[k, path[k]]) for k in range(t))
    return out


@pytest.mark.parametrize("T,C,target,blank", CASES)
def test_forward_definition_matches_brute_force(T, C, target, blank):
    g = torch.Generator().manual_seed(T * 100 + C * 10 + len(target) + 1)
    log_probs = torch.randn(1, T, C, generator=g, dtype=torch.float64).log_softmax(-1)
    got = ctc_prefix_log_probs(log_probs, torch.tensor([T]), torch.tensor([target]), torch.tensor([len(target)]),
                               blank, definition="forward")
    sums = _brute_forward_sums(log_probs[0].exp(), target, blank)
    want = torch.tensor([math.log(b) - math.log(a) if b > 0 else -math.inf for a, b in zip(sums, sums[1:])],
                        dtype=torch.float64)
    assert torch.equal(torch.isinf(got[0]), torch.isinf(want))
    fin = torch.isfinite(want)
    torch.testing.assert_close(got[0][fin], want[fin], rtol=1e-10, atol=1e-10)


def test_forward_definition_batched_with_padding_equals_per_utterance():
    g = torch.Generator().manual_seed(3)
    log_probs = torch.randn(2, 7, 4, generator=g, dtype=torch.float64).log_softmax(-1)
    targets, lengths, tlens = torch.tensor([[1, 2, 2], [3, 1, 0]]), torch.tensor([7, 5]), torch.tensor([3, 2])
    both = ctc_prefix_log_probs(log_probs, lengths, targets, tlens, definition="forward")
    for b in range(2):
        one = ctc_prefix_log_probs(log_probs[b:b + 1, : lengths[b]], lengths[b:b + 1], targets[b:b + 1, : tlens[b]],
                                   tlens[b:b + 1], definition="forward")
        torch.testing.assert_close(both[b, : tlens[b]], one[0], rtol=1e-12, atol=1e-12)


def test_prefix_scores_sum_to_log_prefix_probability():
    T, C, target = 6, 3, [1, 2, 2]
    log_probs = torch.randn(1, T, C, dtype=torch.float64).log_softmax(-1)
    got = ctc_prefix_log_probs(log_probs, torch.tensor([T]), torch.tensor([target]), torch.tensor([3]),
                               definition="onset")
    ref = _brute_prefix_probs(log_probs[0].exp(), target, 0)[-1]
    assert float(got.sum()) == pytest.approx(math.log(ref), rel=1e-10)


@pytest.mark.parametrize("definition", ["onset", "forward"])
def test_batched_with_padding_equals_per_utterance(definition):
    torch.manual_seed(0)
    items = [(5, [1, 2]), (9, [2, 2, 1, 3]), (3, [3]), (7, [1, 3, 1])]  # unsorted lengths
    B, T, S, C = len(items), 9, 4, 4
    log_probs = torch.randn(B, T, C, dtype=torch.float64).log_softmax(-1)
    lengths = torch.tensor([t for t, _ in items])
    for b, (t, _) in enumerate(items):
        log_probs[b, t:] = float("nan")  # garbage in padding must not leak
    targets = torch.full((B, S), 7)  # padding id out of range on purpose
    for b, (_, tgt) in enumerate(items):
        targets[b, : len(tgt)] = torch.tensor(tgt)
    target_lengths = torch.tensor([len(tgt) for _, tgt in items])
    log_probs.requires_grad_(True)
    got = ctc_prefix_log_probs(log_probs, lengths, targets, target_lengths, definition=definition)
    got.sum().backward()
    assert torch.isfinite(log_probs.grad).all()
    for b, (t, tgt) in enumerate(items):
        single = ctc_prefix_log_probs(log_probs[b : b + 1, :t].detach(), torch.tensor([t]), torch.tensor([tgt]),
                                      torch.tensor([len(tgt)]), definition=definition)
        torch.testing.assert_close(got[b, : len(tgt)].detach(), single[0])
        assert torch.all(got[b, len(tgt):] == 0.0)
        assert torch.all(log_probs.grad[b, t:] == 0.0)


@pytest.mark.parametrize("definition", ["onset", "forward"])
def test_gradient_matches_finite_differences(definition):
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 1, 2], [2, 1, 0]])

    def f(z):
        return ctc_prefix_log_probs(z.log_softmax(-1), torch.tensor([5, 4]), targets, torch.tensor([3, 2]),
                                    definition=definition)

    assert torch.autograd.gradcheck(f, (logits,))


@pytest.mark.parametrize("definition", ["onset", "forward"])
def test_gradient_finite_with_impossible_positions(definition):
    # 3 frames cannot hold [1, 1, 1] (needs 5): the tail is -inf, the gradient stays finite
    log_probs = torch.randn(1, 3, 3).log_softmax(-1).requires_grad_(True)
    got = ctc_prefix_log_probs(log_probs, torch.tensor([3]), torch.tensor([[1, 1, 1]]), torch.tensor([3]),
                               definition=definition)
    assert torch.isfinite(got[0, :2]).all() and got[0, 2] == -math.inf
    got[0, :2].sum().backward()
    assert torch.isfinite(log_probs.grad).all()


def test_prefix_rejects_blank_in_targets():
    with pytest.raises(ValueError, match="other than blank"):
        ctc_prefix_log_probs(torch.zeros(1, 3, 3), torch.tensor([3]), torch.tensor([[1, 0]]), torch.tensor([2]))


def test_aed_gathers_teacher_forced_rows_and_ignores_eos():
    torch.manual_seed(2)
    dec = torch.randn(2, 4, 6).log_softmax(-1)  # S + 1 = 4 rows: the last predicts EOS
    targets = torch.tensor([[3, 1, 5], [2, 4, 0]])
    got = aed_label_log_probs(dec, targets, torch.tensor([3, 2]))
    want = torch.tensor([[dec[0, 0, 3], dec[0, 1, 1], dec[0, 2, 5]], [dec[1, 0, 2], dec[1, 1, 4], 0.0]])
    torch.testing.assert_close(got, want)


def test_joint_with_zero_aed_weight_is_ctc():
    ctc = torch.tensor([[-1.0, -2.0]])
    aed = torch.tensor([[-math.inf, -0.5]])
    assert torch.equal(joint_label_log_probs(ctc, aed, 1.0, 0.0), ctc)
    assert torch.equal(joint_label_log_probs(ctc, None, 1.0, 0.0), ctc)
    torch.testing.assert_close(joint_label_log_probs(ctc, aed[:, 1:].expand(1, 2), 0.3, 0.7),
                               0.3 * ctc + 0.7 * torch.tensor([[-0.5, -0.5]]))
    with pytest.raises(ValueError):
        joint_label_log_probs(ctc, aed, 0.0, 0.0)
