"""Skipped words and untranscribed stretches in every output: CTM comments, TextGrid tiers, cut fields,
the time shift; fsalign's readers still read the files; the matched-word TSE against hand computation."""
import pytest
from lhotse import CutSet, MonoCut, SupervisionSegment
from lhotse.testing.dummies import dummy_recording
from praatio import textgrid

from fsalign.aligning.output import merge_outputs
from fsalign.results.formats import (
    MISMATCH_TIERS,
    TimedSpan,
    UtteranceTimes,
    format_ctm,
    read_ctm,
    read_textgrid,
    read_utterances,
    write_ctm,
    write_textgrid,
)
from fsalign.results.manifests import cut_with_alignment
from fsalign.results.matched import compare_matched, matched_pairs
from fsalign.results.times import UNTRANSCRIBED_LABEL, MismatchTimes, SkippedWord


def _utt(utt_id="u1"):
    """Transcript HELLO BIG WORLD AGAIN: BIG and AGAIN skipped, untranscribed speech at 0.6-0.8 s."""
    words = [TimedSpan("HELLO", 0.12, 0.48), TimedSpan("WORLD", 0.8, 1.0)]
    tokens = [TimedSpan("HH", 0.12, 0.2), TimedSpan("EH", 0.2, 0.48), TimedSpan("W", 0.8, 1.0)]
    mismatch = MismatchTimes([SkippedWord("BIG", 1, 0.48), SkippedWord("AGAIN", 3, 1.0)],
                             [TimedSpan(UNTRANSCRIBED_LABEL, 0.6, 0.8)])
    return UtteranceTimes(utt_id, 1.2, words, tokens, mismatch=mismatch)


def test_ctm_marks_skipped_words_and_untranscribed_stretches_in_time_order():
    assert format_ctm(_utt()) == (
        "u1 1 0.120 0.360 HELLO\n"
        ";; skipped u1 1 1 BIG\n"
        ";; untranscribed u1 1 0.600 0.200\n"
        "u1 1 0.800 0.200 WORLD\n"
        ";; skipped u1 1 3 AGAIN\n")
    assert format_ctm(_utt(), "token").splitlines()[2] == ";; skipped u1 1 1 BIG"
    plain = _utt()
    plain.mismatch = None
    assert ";;" not in format_ctm(plain)


def test_ctm_readers_and_merge_keep_the_words(tmp_path):
    write_ctm([_utt("u1")], tmp_path / "a.ctm")
    write_ctm([_utt("u2")], tmp_path / "b.ctm")
    assert [s.label for s in read_ctm(tmp_path / "a.ctm")["u1"]] == ["HELLO", "WORLD"]
    assert merge_outputs([tmp_path / "a.ctm", tmp_path / "b.ctm"], tmp_path / "all.ctm") == 2
    text = (tmp_path / "all.ctm").read_text()
    assert text == (tmp_path / "a.ctm").read_text() + (tmp_path / "b.ctm").read_text()
    assert sorted(read_utterances(tmp_path / "all.ctm")) == ["u1", "u2"]


def test_textgrid_tiers_read_back_with_praatio(tmp_path):
    path = tmp_path / "u1.TextGrid"
    write_textgrid(_utt(), path)
    grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
    assert grid.tierNames == ("words", "tokens") + MISMATCH_TIERS
    assert [tuple(e) for e in grid.getTier("untranscribed").entries] == [(0.6, 0.8, UNTRANSCRIBED_LABEL)]
    assert [tuple(e) for e in grid.getTier("skipped").entries] == [(0.48, "BIG"), (1.0, "AGAIN")]
    assert [s.label for s in read_textgrid(path)] == ["HELLO", "WORLD"]  # skipped words are on no words tier
    assert [s.label for s in read_utterances(tmp_path)["u1"].words] == ["HELLO", "WORLD"]


def test_textgrid_joins_skipped_words_at_one_place_and_stays_plain_without_mismatch(tmp_path):
    utt = _utt()
    utt.mismatch = MismatchTimes([SkippedWord("BIG", 1, 0.48), SkippedWord("RED", 2, 0.48)], [])
    write_textgrid(utt, tmp_path / "a.TextGrid")
    grid = textgrid.openTextgrid(str(tmp_path / "a.TextGrid"), includeEmptyIntervals=False)
    assert [tuple(e) for e in grid.getTier("skipped").entries] == [(0.48, "BIG RED")]
    assert list(grid.getTier("untranscribed").entries) == []
    utt.mismatch = None
    write_textgrid(utt, tmp_path / "b.TextGrid")
    assert textgrid.openTextgrid(str(tmp_path / "b.TextGrid"), False).tierNames == ("words", "tokens")


def _cut():
    rec = dummy_recording(0, duration=3.0)
    sup = SupervisionSegment("s", rec.id, start=1.0, duration=1.2, text="hello big world again")
    return MonoCut("c", start=1.0, duration=1.2, channel=0, recording=rec, supervisions=[sup])


def test_cuts_carry_skipped_words_and_untranscribed_items(tmp_path):
    cut = cut_with_alignment(_cut(), _utt("c"))
    assert cut.custom["skipped_words"] == [{"index": 1, "word": "BIG"}, {"index": 3, "word": "AGAIN"}]
    items = cut.supervisions[0].alignment["untranscribed"]
    assert [(i.symbol, i.start, i.duration) for i in items] == [(UNTRANSCRIBED_LABEL, 1.6, pytest.approx(0.2))]
    CutSet.from_cuts([cut]).to_file(tmp_path / "cuts.jsonl.gz")
    back = read_utterances(tmp_path / "cuts.jsonl.gz")["c"]
    assert [s.label for s in back.words] == ["HELLO", "WORLD"]
    loaded = next(iter(CutSet.from_file(tmp_path / "cuts.jsonl.gz")))
    assert loaded.custom["skipped_words"][1] == {"index": 3, "word": "AGAIN"}
    plain = _utt("c")
    plain.mismatch = None
    assert "untranscribed" not in cut_with_alignment(_cut(), plain).supervisions[0].alignment


def test_shifted_moves_the_mismatch_marks():
    moved = _utt().shifted(2.0)
    assert [w.at for w in moved.mismatch.skipped] == [2.48, 3.0]
    assert [(s.start, s.end) for s in moved.mismatch.untranscribed] == [(2.6, 2.8)]


def test_matched_tse_by_hand():
    ref = UtteranceTimes("u", 2.0, [TimedSpan("A", 0.0, 0.4), TimedSpan("B", 0.5, 0.9), TimedSpan("C", 1.0, 1.5)])
    hyp = UtteranceTimes("u", 2.0, [TimedSpan("a", 0.02, 0.4), TimedSpan("X", 0.4, 0.6), TimedSpan("C", 1.1, 1.5)])
    assert matched_pairs(ref.words, hyp.words) == [(0, 0), (2, 2)]
    result = compare_matched({"u": ref}, {"u": hyp})
    # |0.02| + |0| for A, |0.1| + |0| for C, over 2 * 2 boundaries
    assert result.num_words == 2 and result.tse_boundary_ms == pytest.approx(1000 * 0.12 / 4)
    assert result.tse_centre_ms == pytest.approx(1000 * (0.01 + 0.05) / 2)
    assert (result.ref_words, result.hyp_words, result.num_utterances) == (3, 3, 1)
    assert compare_matched({"u": ref}, {"v": hyp}).tse_boundary_ms is None
