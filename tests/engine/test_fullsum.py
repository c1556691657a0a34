"""full_sum_loss / soft_alignment against torch's ctc_loss, batching and autograd."""
import math

import pytest
import torch

import fsalign


def _batch(B=4, T=12, C=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    lengths = torch.tensor([7, 12, 3, 9][:B])
    transcripts = [[[1, 2], [2, 2]], [[3], [4, 5, 5], [1]], [[5]], [[4, 4, 1]]][:B]
    return logits, lengths, transcripts


def _ctc_loss_reference(log_probs, lengths, transcripts, blank=0):
    targets = [torch.tensor([t for w in words for t in w]) for words in transcripts]
    target_lengths = torch.tensor([len(t) for t in targets])
    padded = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=blank)
    return torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1), padded, lengths, target_lengths, blank=blank,
        reduction="none", zero_infinity=False)


@pytest.mark.parametrize("engine", ["chain", "k2"])
@pytest.mark.parametrize("blank", [0, 5])
def test_ctc_topology_equals_torch_ctc_loss_values_and_gradients(blank, engine):
    logits, lengths, transcripts = _batch()
    if blank != 0:  # move token ids off the blank column
        transcripts = [[[0 if t == blank else t for t in w] for w in u] for u in transcripts]
    topo = fsalign.CtcTopology(6, blank=blank)
    graphs = topo.compile(transcripts)

    x1 = logits.clone().float().requires_grad_()
    nll = fsalign.full_sum_loss(x1.log_softmax(-1), lengths, graphs, transition_scale=0.0, engine=engine)
    nll.sum().backward()

    x2 = logits.clone().float().requires_grad_()
    ref = _ctc_loss_reference(x2.log_softmax(-1), lengths, transcripts, blank)
    ref.sum().backward()

    torch.testing.assert_close(nll.float(), ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("engine", ["chain", "k2"])
def test_batched_equals_per_utterance_in_any_length_order(engine):
    logits, lengths, transcripts = _batch()
    topo = fsalign.HmmTopology(6)
    log_probs = logits.float().log_softmax(-1)
    batched = fsalign.full_sum_loss(log_probs, lengths, topo.compile(transcripts), engine=engine)
    for b in range(len(transcripts)):
        T = int(lengths[b])
        single = fsalign.full_sum_loss(log_probs[b:b + 1, :T], lengths[b:b + 1], topo.compile([transcripts[b]]),
                                       engine=engine)
        assert float(batched[b]) == pytest.approx(float(single[0]), rel=1e-6)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = fsalign.full_sum_loss(log_probs[perm], lengths[perm], topo.compile([transcripts[i] for i in perm]),
                                     engine=engine)
    torch.testing.assert_close(permuted, batched[perm])
    alis = fsalign.viterbi_align(log_probs[perm], lengths[perm], topo.compile([transcripts[i] for i in perm]),
                                 engine=engine)
    ref = fsalign.viterbi_align(log_probs, lengths, topo.compile(transcripts), engine=engine)
    for k, i in enumerate(perm.tolist()):
        assert alis[k].tokens == ref[i].tokens and alis[k].score == pytest.approx(ref[i].score)


@pytest.mark.parametrize("topo", [fsalign.CtcTopology(6, label_loop=0.7, blank_loop=0.4),
                                  fsalign.HmmTopology(6), fsalign.RelaxedTopology(6)])
def test_soft_alignment_sums_to_one_on_valid_frames_and_zero_on_padding(topo):
    logits, lengths, transcripts = _batch()
    log_probs = logits.float().log_softmax(-1)
    v = fsalign.soft_alignment(log_probs, lengths, topo.compile(transcripts), posterior_scale=0.7,
                               transition_scale=0.5)
    assert v.shape == log_probs.shape
    sums = v.sum(-1)
    valid = torch.arange(12)[None, :] < lengths[:, None]
    torch.testing.assert_close(sums[valid], torch.ones(int(valid.sum())), atol=1e-4, rtol=0)
    assert float(sums[~valid].abs().max()) == 0.0
    assert float(v.min()) >= 0.0


def test_soft_alignment_is_the_gradient_of_the_total_wrt_log_probs():
    """α=1: d total / d log_probs = v (eq. 19); with α it is α·v."""
    logits, lengths, transcripts = _batch()
    graphs = fsalign.CtcTopology(6).compile(transcripts)
    log_probs = logits.float().log_softmax(-1).detach().requires_grad_()
    alpha = 0.6
    total = fsalign.full_sum_scores(log_probs, lengths, graphs, posterior_scale=alpha)
    (grad,) = torch.autograd.grad(total.sum(), log_probs)
    v = fsalign.soft_alignment(log_probs, lengths, graphs, posterior_scale=alpha)
    torch.testing.assert_close(grad, alpha * v, atol=1e-5, rtol=1e-5)


def test_gradient_matches_finite_differences_with_scales_and_batch_prior():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    log_prior = torch.randn(2, 4, generator=g, dtype=torch.float64).log_softmax(-1)
    lengths = torch.tensor([4, 5])
    graphs = fsalign.HmmTopology(4, label_loop=0.6, silence_loop=0.8).compile([[[1], [2]], [[3, 3]]])

    def f(x, p):
        lp = x.log_softmax(-1)
        return fsalign.full_sum_loss(lp, lengths, graphs, posterior_scale=0.7, prior_scale=0.4,
                                     log_prior=p, transition_scale=0.5).sum()

    x = logits.clone().requires_grad_()
    p = log_prior.clone().requires_grad_()
    f(x, p).backward()
    eps = 1e-3
    for (tensor, grad) in [(logits, x.grad), (log_prior, p.grad)]:
        for idx in [(0, 1, 2), (1, 4, 0), (0, 0, 0)] if tensor.ndim == 3 else [(0, 1), (1, 3), (1, 0)]:
            plus, minus = tensor.clone(), tensor.clone()
            plus[idx] += eps
            minus[idx] -= eps
            args = (plus, log_prior) if tensor.ndim == 3 else (logits, plus)
            args_m = (minus, log_prior) if tensor.ndim == 3 else (logits, minus)
            fd = (f(*args) - f(*args_m)).item() / (2 * eps)
            assert float(grad[idx]) == pytest.approx(fd, abs=2e-3)


def test_infeasible_utterance_gives_inf_and_zero_gradient_while_batch_trains():
    logits, lengths, transcripts = _batch()
    lengths = lengths.clone()
    lengths[2] = 1
    transcripts[2] = [[5, 5]]  # CTC needs 3 frames
    graphs = fsalign.CtcTopology(6).compile(transcripts)
    x = logits.float().requires_grad_()
    nll = fsalign.full_sum_loss(x.log_softmax(-1), lengths, graphs)
    assert math.isinf(float(nll[2])) and float(nll[2]) > 0
    assert torch.isfinite(nll[[0, 1, 3]]).all()
    nll[torch.isfinite(nll)].sum().backward()
    assert float(x.grad[2].abs().max()) == 0.0
    assert float(x.grad[0].abs().max()) > 0.0
    # all infeasible: still a differentiable (B,) tensor of +inf
    graphs = fsalign.CtcTopology(6).compile([[[1, 1]]])
    x = logits[:1, :1].float().requires_grad_()
    nll = fsalign.full_sum_loss(x.log_softmax(-1), torch.tensor([1]), graphs)
    assert nll.tolist() == [math.inf]


def test_empty_transcript_aligns_to_all_blank_or_silence():
    log_probs = torch.randn(1, 4, 3).log_softmax(-1)
    for topo in (fsalign.CtcTopology(3), fsalign.HmmTopology(3, label_loop=None, silence_loop=None)):
        graphs = topo.compile([[]])
        nll = fsalign.full_sum_loss(log_probs, torch.tensor([4]), graphs)
        assert float(nll[0]) == pytest.approx(-float(log_probs[0, :, 0].sum()), rel=1e-5)
        (ali,) = fsalign.viterbi_align(log_probs, torch.tensor([4]), graphs)
        assert ali.labels.tolist() == [0, 0, 0, 0] and ali.tokens == [] and ali.words == []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("engine", ["chain", "k2"])
def test_cuda_matches_cpu(engine):
    logits, lengths, transcripts = _batch()
    for topo in (fsalign.CtcTopology(6, label_loop=0.5, blank_loop=0.5), fsalign.HmmTopology(6)):
        cpu = fsalign.full_sum_loss(logits.float().log_softmax(-1), lengths, topo.compile(transcripts))
        x = logits.float().cuda().requires_grad_()
        gpu = fsalign.full_sum_loss(x.log_softmax(-1), lengths.cuda(), topo.compile(transcripts, device="cuda"),
                                    engine=engine)
        gpu.sum().backward()
        assert x.grad.is_cuda
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-5)
        alis = fsalign.viterbi_align(x.detach().log_softmax(-1), lengths.cuda(),
                                     topo.compile(transcripts, device="cuda"), engine=engine)
        ref = fsalign.viterbi_align(logits.float().log_softmax(-1), lengths, topo.compile(transcripts))
        assert [a.tokens for a in alis] == [a.tokens for a in ref]
