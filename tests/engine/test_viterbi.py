"""viterbi_align: spans on hand-checked paths, times, and every input error."""
import math

import pytest
import torch

import fsalign


def _peaked(path, C, high=0.0, low=-20.0):
    """log-probs (1, T, C) whose best path is exactly ``path``."""
    x = torch.full((1, len(path), C), low)
    x[0, torch.arange(len(path)), torch.tensor(path)] = high
    return x


def test_ctc_spans_follow_the_paper_word_boundaries():
    # words: [1 2] [3]; frames: ε 1 1 ε 2 ε ε 3 3 ε
    path = [0, 1, 1, 0, 2, 0, 0, 3, 3, 0]
    (ali,) = fsalign.viterbi_align(_peaked(path, 4), torch.tensor([10]),
                                   fsalign.CtcTopology(4).compile([[[1, 2], [3]]]))
    assert ali.labels.tolist() == path
    assert [(t.position, t.word, t.token, t.start, t.end) for t in ali.tokens] == [
        (0, 0, 1, 1, 3), (1, 0, 2, 4, 5), (2, 1, 3, 7, 9)]
    assert [(w.index, w.start, w.end) for w in ali.words] == [(0, 1, 5), (1, 7, 9)]
    # 10 ms frames, subsampling 4: a word ends at the end of its last frame
    assert ali.word_times(0.01, 4) == [pytest.approx((0.04, 0.20)), pytest.approx((0.28, 0.36))]
    # placed on the audio (offset -15 ms) and clipped at 0
    assert ali.word_times(0.01, 4, offset_s=-0.015) == [pytest.approx((0.025, 0.185)), pytest.approx((0.265, 0.345))]
    assert ali.words[0].seconds(0.01, 4, offset_s=-0.05) == pytest.approx((0.0, 0.15))
    assert ali.score == pytest.approx(0.0)


def test_repeated_tokens_are_separate_spans_for_hmm_and_relaxed():
    path = [0, 2, 2, 2, 0, 1]
    for topo in (fsalign.HmmTopology(3, label_loop=None, silence_loop=None),
                 fsalign.RelaxedTopology(3)):
        (ali,) = fsalign.viterbi_align(_peaked(path, 3), torch.tensor([6]), topo.compile([[[2, 2], [1]]]))
        assert ali.labels.tolist() == path
        spans = [(t.token, t.start, t.end) for t in ali.tokens]
        assert spans[2] == (1, 5, 6)
        assert spans[0][1] == 1 and spans[1][2] == 4 and spans[0][2] == spans[1][1]


def test_hmm_never_puts_silence_inside_a_word():
    # the scores prefer silence in the middle of the word [1 2], which the HMM forbids
    path = [1, 0, 2]
    topo = fsalign.HmmTopology(3, label_loop=None, silence_loop=None)
    (ali,) = fsalign.viterbi_align(_peaked(path, 3), torch.tensor([3]), topo.compile([[[1, 2]]]))
    assert 0 not in ali.labels.tolist()
    # but allows it between words
    (ali,) = fsalign.viterbi_align(_peaked(path, 3), torch.tensor([3]), topo.compile([[[1], [2]]]))
    assert ali.labels.tolist() == path


def test_score_is_the_scaled_path_score():
    log_probs = torch.randn(1, 5, 3).log_softmax(-1)
    log_prior = torch.randn(3).log_softmax(-1)
    topo = fsalign.HmmTopology(3, label_loop=0.6, silence_loop=0.9)
    (ali,) = fsalign.viterbi_align(log_probs, torch.tensor([5]), topo.compile([[[1], [2]]]), posterior_scale=0.7,
                                   prior_scale=0.3, log_prior=log_prior, transition_scale=0.5)
    y = ali.labels
    expected = float((0.7 * log_probs[0, torch.arange(5), y] - 0.3 * log_prior[y]).sum())
    # transitions: HMM states are runs of equal labels here (tokens 1, 2 differ, silence between words)
    loops = {0: 0.9, 1: 0.6, 2: 0.6}
    for t in range(1, 5):
        q = loops[int(y[t - 1])]
        expected += 0.5 * (math.log(q) if y[t] == y[t - 1] else math.log(1 - q))
    assert ali.score == pytest.approx(expected, abs=1e-4)


def test_infeasible_raises_naming_every_utterance_or_skips():
    topo = fsalign.CtcTopology(4)
    graphs = topo.compile([[[1, 1]], [[1]], [[1, 2, 3]]])
    log_probs = torch.randn(3, 4, 4).log_softmax(-1)
    lengths = torch.tensor([2, 4, 2])
    with pytest.raises(fsalign.InfeasibleAlignment) as err:
        fsalign.viterbi_align(log_probs, lengths, graphs)
    assert isinstance(err.value, ValueError)
    assert err.value.indices == [0, 2]
    assert err.value.frames_given == [2, 2] and err.value.frames_needed == [3, 3]
    assert "utterance 0: 2 frames given, 3 needed" in str(err.value)
    alis = fsalign.viterbi_align(log_probs, lengths, graphs, on_infeasible="skip")
    assert alis[0] is None and alis[2] is None and alis[1] is not None


GOOD = torch.randn(2, 5, 4).log_softmax(-1)
LENS = torch.tensor([5, 3])
GRAPHS = fsalign.CtcTopology(4).compile([[[1]], [[2, 3]]])


@pytest.mark.parametrize(
    "args, message",
    [
        ((GOOD[0], LENS, GRAPHS), "shape (B, T, C)"),
        ((GOOD.long(), LENS, GRAPHS), "floating point"),
        ((GOOD[:, :, :3], LENS, GRAPHS), "C=3 columns"),
        ((GOOD[:1], LENS, GRAPHS), "1 utterances but graphs has 2"),
        ((GOOD, torch.tensor([5, 6]), GRAPHS), "utterance 1 has 6"),
        ((GOOD, torch.tensor([0, 3]), GRAPHS), "utterance 0 has 0"),
        ((GOOD, torch.tensor([5.0, 3.0]), GRAPHS), "integer"),
        ((GOOD, torch.tensor([5]), GRAPHS), "shape (2,)"),
        ((GOOD.index_put((torch.tensor([1]), torch.tensor([2])), torch.tensor(float("nan"))), LENS, GRAPHS),
         "utterance 1 (first at frame 2)"),
        ((GOOD, LENS, GRAPHS.fsa), "TrainingGraphs"),
    ],
)
def test_malformed_inputs_raise_value_errors_saying_what_arrived(args, message):
    for fn in (fsalign.full_sum_loss, fsalign.viterbi_align, fsalign.soft_alignment):
        with pytest.raises(ValueError, match=None) as err:
            fn(*args)
        assert message in str(err.value)


def test_nan_in_padding_is_ignored():
    x = GOOD.clone()
    x[1, 4] = float("nan")  # frame 4 of utterance 1 is padding (length 3)
    assert torch.isfinite(fsalign.full_sum_loss(x, LENS, GRAPHS)).all()


def test_prior_errors():
    with pytest.raises(ValueError, match="needs a log_prior"):
        fsalign.full_sum_loss(GOOD, LENS, GRAPHS, prior_scale=0.5)
    with pytest.raises(ValueError, match=r"shape \(4,\) or \(2, 4\)"):
        fsalign.full_sum_loss(GOOD, LENS, GRAPHS, prior_scale=0.5, log_prior=torch.zeros(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        fsalign.full_sum_loss(GOOD, LENS, GRAPHS, prior_scale=0.5,
                              log_prior=torch.tensor([0.0, -math.inf, 0.0, 0.0]))


@pytest.mark.parametrize(
    "transcripts, message",
    [
        ([[[0]]], "utterance 0, word 0: token id 0 is not a token"),
        ([[[1], [4]]], "utterance 0, word 1: token id 4"),
        ([[[1]], [[]]], "utterance 1, word 0: a word needs at least one token"),
        ([[1, 2]], "utterance 0, word 0: expected a list of token ids"),
        ([[["a"]]], "is not an int"),
        ("abc", "transcripts must be a list"),
    ],
)
def test_bad_transcripts_name_utterance_and_word(transcripts, message):
    for topo in (fsalign.CtcTopology(4), fsalign.HmmTopology(4)):
        with pytest.raises(ValueError) as err:
            topo.compile(transcripts)
        assert message in str(err.value)


def test_bad_topology_arguments():
    with pytest.raises(ValueError, match="probability"):
        fsalign.HmmTopology(4, label_loop=1.0)
    with pytest.raises(ValueError, match="on_infeasible"):
        fsalign.viterbi_align(GOOD, LENS, GRAPHS, on_infeasible="ignore")
