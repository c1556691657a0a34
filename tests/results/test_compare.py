"""Word and token boundary errors of ``compare_alignments`` on an example computed by hand."""
import math

import pytest

from fsalign.results.compare import TOLERANCES_MS, compare_alignments, error_lines, with_tokens, word_tokens
from fsalign.results.metrics import time_stamp_error
from fsalign.results.times import TimedSpan, UtteranceTimes


def _spans(*items):
    return [TimedSpan(label, start, end) for label, start, end in items]


# utterance u (2 s): two words, phones inside them; the reference has a token "x" in the pause [0.40, 0.50]
REF_U = UtteranceTimes("u", 2.0, _spans(("A", 0.100, 0.400), ("B", 0.500, 0.900)),
                       _spans(("A1", 0.100, 0.250), ("A2", 0.250, 0.400), ("x", 0.400, 0.500),
                              ("B1", 0.500, 0.700), ("B2", 0.700, 0.900)))
HYP_U = UtteranceTimes("u", 2.0, _spans(("a", 0.110, 0.380), ("b", 0.530, 0.900)),
                       _spans(("a1", 0.110, 0.260), ("a2", 0.260, 0.380), ("B1", 0.530, 0.900)))
# utterance v: other words (skipped); w: only in the hypothesis
REF_V = UtteranceTimes("v", 1.0, _spans(("C", 0.0, 0.5), ("D", 0.5, 1.0)))
HYP_V = UtteranceTimes("v", 1.0, _spans(("C", 0.0, 0.5), ("E", 0.5, 1.0)))
HYP_W = UtteranceTimes("w", 1.0, _spans(("F", 0.0, 0.5)))


def test_word_and_token_errors_computed_by_hand():
    c = compare_alignments({"u": REF_U, "v": REF_V}, {"u": HYP_U, "v": HYP_V, "w": HYP_W})
    # words of u (ms), Δ = hyp - ref:  A: start 100 -> 110 (+10), end 400 -> 380 (-20)
    #                                  B: start 500 -> 530 (+30), end 900 -> 900 (0)
    assert (c.num_utterances, c.num_words) == (1, 2)
    assert list(c.skipped) == ["v"] and "word 2 is 'd'" in c.skipped["v"] and c.skipped_words == 2
    assert c.only_in_hyp == ["w"] and c.only_in_ref == []
    assert c.tse_boundary_ms == pytest.approx((10 + 20 + 30 + 0) / 4)  # 15
    assert c.tse_centre_ms == pytest.approx((5 + 15) / 2)  # centres 250 -> 245, 700 -> 715
    assert c.onset_ms == pytest.approx((10 + 30) / 2) and c.offset_ms == pytest.approx((20 + 0) / 2)
    assert c.onset_bias_ms == pytest.approx((10 + 30) / 2)  # both start late
    assert c.offset_bias_ms == pytest.approx((-20 + 0) / 2)  # A ends early
    # the four boundaries are off by 10, 20, 30, 0 ms: within 10 ms: 10 and 0 (a boundary exactly 10 ms off counts)
    assert list(c.within_ms) == [f"{ms}" for ms in TOLERANCES_MS] == ["10", "20", "25", "50"]
    assert c.within_ms["10"] == pytest.approx(2 / 4) and c.within_ms["20"] == pytest.approx(3 / 4)
    assert c.within_ms["25"] == pytest.approx(3 / 4) and c.within_ms["50"] == pytest.approx(4 / 4)
    # tokens: "x" lies in no word (midpoint 450 ms); A's tokens match (case-insensitively), B's do not (B1 B2 vs B1)
    #   A1: start 100 -> 110 (+10), end 250 -> 260 (+10);  A2: start 250 -> 260 (+10), end 400 -> 380 (-20)
    assert (c.num_tokens, c.token_words, c.token_words_skipped) == (2, 1, 1)
    assert c.token_boundary_ms == pytest.approx((10 + 10 + 10 + 20) / 4)  # 12.5, MFA's alignment score
    assert c.token_within_ms == pytest.approx({"10": 3 / 4, "20": 1.0, "25": 1.0, "50": 1.0})
    errors = c.errors()
    assert errors["onset_ms"] == c.onset_ms and "skipped" not in errors and "ref" not in errors
    lines = error_lines(errors)
    assert lines[0] == "TSE boundary: 15.0 ms, centre: 10.0 ms"
    assert lines[1] == ("onset (word start) error: 20.0 ms (mean signed +20.0 ms), "
                        "offset (word end) error: 10.0 ms (mean signed -10.0 ms)")
    assert lines[2] == "word boundaries (starts and ends) within 10 / 20 / 25 / 50 ms: 50.0 / 75.0 / 75.0 / 100.0 %"
    assert lines[3].startswith("by place (mean error, mean signed, boundaries): between words n/a (n/a, 0), ")
    assert lines[4].startswith("token boundary error: 12.5 ms over 2 tokens of 1 words (1 words with other tokens")
    assert lines[5] == "token boundaries within 10 / 20 / 25 / 50 ms: 75.0 / 100.0 / 100.0 / 100.0 %"


def test_errors_by_place_computed_by_hand():
    # X and Y touch, Y and Z are 5 ms apart (no pause: below PAUSE_MIN_MS), Z and W 200 ms (a pause)
    ref = UtteranceTimes("p", 2.0, _spans(("X", 0.0, 0.3), ("Y", 0.3, 0.6), ("Z", 0.605, 1.0), ("W", 1.2, 1.5)))
    hyp = UtteranceTimes("p", 2.0, _spans(("X", 0.02, 0.32), ("Y", 0.32, 0.58), ("Z", 0.599, 0.95), ("W", 1.25, 1.5)))
    # Δ (ms): X start +20 (first word: after a pause), X end +20, Y start +20, Y end -20, Z start -6 (between
    # words), Z end -50 (before the pause), W start +50 (after it), W end 0 (last word: before a pause)
    c = compare_alignments({"p": ref}, {"p": hyp})
    assert c.by_place == {
        "between_words": {"boundaries": 4, "error_ms": pytest.approx((20 + 20 + 20 + 6) / 4),
                          "bias_ms": pytest.approx((20 + 20 - 20 - 6) / 4)},
        "after_pause": {"boundaries": 2, "error_ms": pytest.approx(35.0), "bias_ms": pytest.approx(35.0)},
        "before_pause": {"boundaries": 2, "error_ms": pytest.approx(25.0), "bias_ms": pytest.approx(-25.0)},
    }
    # every boundary is in one place: the places' errors average to the TSE
    total = sum(p["error_ms"] * p["boundaries"] for p in c.by_place.values())
    assert total / (2 * c.num_words) == pytest.approx(c.tse_boundary_ms)
    assert error_lines(c.errors())[3] == ("by place (mean error, mean signed, boundaries): between words 16.5 ms "
                                          "(+3.5 ms, 4), starts after a pause 35.0 ms (+35.0 ms, 2), ends before a "
                                          "pause 25.0 ms (-25.0 ms, 2)")


def test_no_tokens_no_token_errors_and_missing_numbers_print_as_na():
    words_only = {"u": UtteranceTimes("u", 2.0, REF_U.words)}
    c = compare_alignments(words_only, {"u": HYP_U})
    assert c.token_boundary_ms is None and c.num_tokens == 0 and c.token_within_ms == {} and c.token_words == 0
    assert c.tse_boundary_ms == pytest.approx(15.0)
    empty = compare_alignments({}, {})
    assert empty.onset_ms is None and empty.within_ms == {}
    assert error_lines({})[0] == "TSE boundary: n/a, centre: n/a" and len(error_lines({})) == 3


def test_with_tokens_replaces_the_token_times():
    words = {"u": UtteranceTimes("u", None, REF_U.words, [TimedSpan("old", 0.0, 0.1)]), "v": REF_V}
    merged = with_tokens(words, {"u": REF_U.tokens, "z": []})
    assert merged["u"].tokens == REF_U.tokens and merged["u"].words == REF_U.words and merged["v"].tokens == []


def test_word_tokens_assigns_by_midpoint():
    words = _spans(("A", 0.0, 1.0), ("B", 1.0, 2.0))
    tokens = _spans(("p", 0.9, 1.05), ("q", 0.96, 1.2), ("r", 2.0, 2.4), ("s", 1.5, 1.5))
    # midpoints 0.975 (A), 1.08 (B), 2.2 (none), 1.5 (B, a zero-length token)
    assert [[t.label for t in ts] for ts in word_tokens(words, tokens)] == [["p"], ["q", "s"]]


def test_time_stamp_error_sums_add_and_tolerances_must_agree():
    ref, hyp = [[(0.0, 1.0)], [(2.0, 3.0)]], [[(0.05, 0.99)], [(1.97, 3.0)]]
    one = time_stamp_error(ref, hyp, (0.02, 0.05))
    split = time_stamp_error(ref[:1], hyp[:1], (0.02, 0.05)) + time_stamp_error(ref[1:], hyp[1:], (0.02, 0.05))
    # boundaries off by 50, 10, 30, 0 ms: within 20 ms: 2; within 50 ms: 4
    assert one.within == split.within == (2, 4) and one.within_share == pytest.approx((0.5, 1.0))
    assert one.onset_offset == pytest.approx(((0.05 + 0.03) / 2, (0.01 + 0.0) / 2))
    assert one.bias == pytest.approx(((0.05 - 0.03) / 2, (-0.01 + 0.0) / 2))
    assert split.boundary == pytest.approx(one.boundary) and split.onset_offset == pytest.approx(one.onset_offset)
    assert (time_stamp_error([], [], (0.02,)) + one).within == one.within  # the empty sum adds to anything
    with pytest.raises(ValueError, match="tolerances"):
        one + time_stamp_error(ref, hyp, (0.01,))
    assert math.isnan(time_stamp_error([], []).onset_offset[0])
