"""Tests for fsalign.results.metrics against hand-checked examples (A.4.2)."""
import math

import pytest
import torch

import fsalign
from fsalign.results.alignment import TokenSpan, WordSpan
from fsalign.results.metrics import (
    Average,
    average_token_duration,
    blank_posterior,
    blank_ratio,
    collapse_ctc,
    error_rate,
    framewise_ce,
    silence_ratio,
    time_stamp_error,
    uncovered,
    word_error_rate,
)


def _log_probs():
    # Sequence 0 has 2 valid frames, sequence 1 has 1; the rest is padding garbage.
    probs = torch.tensor(
        [
            [[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1.0, 0.0, 0.0]],
            [[0.2, 0.2, 0.6], [0.3, 0.3, 0.4], [0.3, 0.3, 0.4]],
        ]
    )
    return probs.log(), torch.tensor([2, 1])


def test_framewise_ce_hand_checked():
    lp, lengths = _log_probs()
    ref = torch.tensor([[0, 1, 2], [2, 0, -5]])  # padding values are ignored
    ce = framewise_ce(lp, lengths, ref)
    expected = -(math.log(0.5) + math.log(0.8) + math.log(0.6))
    assert ce.count == 3
    assert ce.total == pytest.approx(expected, rel=1e-6)
    assert ce.value == pytest.approx(expected / 3, rel=1e-6)
    # Over a set of sequences: adding batch statistics = one big batch.
    both = framewise_ce(lp[:1], lengths[:1], ref[:1]) + framewise_ce(lp[1:], lengths[1:], ref[1:])
    assert both.value == pytest.approx(ce.value)
    with pytest.raises(ValueError, match="ref_labels"):
        framewise_ce(lp, lengths, torch.tensor([[0, 3, 0], [0, 0, 0]]))


def test_blank_posterior_hand_checked():
    lp, lengths = _log_probs()
    assert blank_posterior(lp, lengths, blank=0).value == pytest.approx((0.5 + 0.1 + 0.2) / 3)
    assert blank_posterior(lp, lengths, blank=2).value == pytest.approx((0.25 + 0.1 + 0.6) / 3)


def test_error_rate_hand_checked():
    # pair 1: one substitution (b -> x) and one deletion (d); pair 2: one insertion.
    stats = error_rate([["a", "b", "c", "d"], [1, 2]], [["a", "x", "c"], [1, 2, 3]])
    assert (stats.substitutions, stats.deletions, stats.insertions, stats.ref_length) == (1, 1, 1, 6)
    assert stats.rate == pytest.approx(3 / 6)
    wer = word_error_rate(["the cat sat", "on the mat"], ["the cat sat down", "on mat"])
    assert (wer.errors, wer.ref_length) == (2, 6)
    assert error_rate([[]], [[]]).rate == 0.0
    with pytest.raises(ValueError, match="hypothesis per reference"):
        error_rate([[1]], [])


def test_collapse_ctc_hand_checked():
    assert collapse_ctc([0, 1, 1, 0, 1, 2, 2, 0], blank=0) == [1, 1, 2]
    assert collapse_ctc(torch.tensor([3, 3, 1, 3]), blank=3) == [1]


def test_time_stamp_error_hand_checked():
    ref = [[(0, 10), (12, 20)], [(5, 9)]]
    hyp = [[(2, 10), (10, 26)], [WordSpan(index=0, start=4, end=9, first_token=0, last_token=0)]]
    tse = time_stamp_error(ref, hyp)
    # boundaries: |0-2|+|10-10| + |12-10|+|20-26| + |5-4|+|9-9| = 2 + 8 + 1 = 11 over 3 words
    assert tse.num_words == 3
    assert tse.boundary == pytest.approx(11 / 6)
    # centres: 5 vs 6, 16 vs 18, 7 vs 6.5 -> 1 + 2 + 0.5
    assert tse.centre == pytest.approx(3.5 / 3)
    split = time_stamp_error(ref[:1], hyp[:1]) + time_stamp_error(ref[1:], hyp[1:])
    assert split.boundary == pytest.approx(tse.boundary) and split.centre == pytest.approx(tse.centre)
    with pytest.raises(ValueError, match="sequence 1"):
        time_stamp_error(ref, [hyp[0], []])


def test_time_stamp_error_in_seconds():
    tse = time_stamp_error([[(0.10, 0.50)]], [[(0.14, 0.42)]])
    assert tse.boundary == pytest.approx((0.04 + 0.08) / 2)
    assert tse.centre == pytest.approx(abs(0.30 - 0.28))


def test_silence_and_blank_ratio_hand_checked():
    # utterance 1 (10 frames): words [1, 4) and [4, 9), tokens [1, 2) [3, 4) [4, 6) [7, 9) (CTC: blank frames inside)
    # utterance 2 (4 frames): one word [0, 2) with one token [0, 2)
    words = [[(1, 4), (4, 9)], [(0, 2)]]
    tokens = [[(1, 2), (3, 4), (4, 6), (7, 9)], [(0, 2)]]
    assert silence_ratio(words, [10, 4]).value == pytest.approx((2 + 2) / 14)  # frames 0, 9 and 2, 3
    assert blank_ratio(tokens, [10, 4]).value == pytest.approx((4 + 2) / 14)  # frames 0, 2, 6, 9 and 2, 3
    # overlapping and out-of-range spans are counted once, clipped to the duration
    assert uncovered([(0.5, 2.0), (1.0, 1.5), (2.5, 9.0)], 3.0) == pytest.approx(0.5 + 0.5)
    # the blank ratio of a Viterbi alignment is the share of its frames on blank
    ali = fsalign.viterbi_align(torch.randn(1, 12, 4).log_softmax(-1), torch.tensor([12]),
                                fsalign.CtcTopology(4).compile([[[1, 2], [3]]]))[0]
    assert blank_ratio([ali.tokens], [12]).value == pytest.approx(float((ali.labels == 0).float().mean()))
    with pytest.raises(ValueError, match="one duration per sequence"):
        silence_ratio(words, [10])


def test_average_token_duration_hand_checked():
    spans = [[(0, 2), (2, 5)], [TokenSpan(position=0, word=0, token=4, start=1, end=2)]]
    duration = average_token_duration(spans)
    assert (duration.total, duration.count) == (6.0, 3)
    assert duration.value == pytest.approx(2.0)
    assert math.isnan(Average(0.0, 0).value)


def test_greedy_decode_ignores_padding_merges_repeats_and_drops_blank():
    from fsalign.results.metrics import greedy_decode

    path = torch.tensor([[0, 3, 3, 0, 3, 2, 2, 1], [1, 1, 0, 2, 5, 5, 5, 5]])
    log_probs = torch.nn.functional.one_hot(path, 6).float().log()
    assert greedy_decode(log_probs, torch.tensor([8, 4])) == [[3, 3, 2, 1], [1, 2]]
    assert greedy_decode(log_probs, torch.tensor([8, 4]), blank=3) == [[0, 0, 2, 1], [1, 0, 2]]
