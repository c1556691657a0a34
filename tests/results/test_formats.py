"""fsalign.results.formats: CTM, TextGrid, LibriSpeech alignments and lhotse cuts, each checked against a
hand-written file or the third-party reader (praatio, lhotse), and the shipped reference data."""
from pathlib import Path

import pytest
from lhotse import CutSet, MonoCut, SupervisionSegment
from lhotse.testing.dummies import dummy_recording
from praatio import textgrid

from fsalign.corpus.cuts import reference_words
from fsalign.errors import FsalignError
from fsalign.results.formats import (
    TimedSpan,
    UtteranceTimes,
    alignment_format,
    format_ctm,
    read_alignments,
    read_ctm,
    read_textgrid,
    read_utterances,
    write_ctm,
    write_textgrid,
)
from fsalign.results.manifests import cut_with_alignment

REPO = Path(__file__).resolve().parents[2]
ALIGNMENTS = REPO / "data" / "alignments"


def _utt(utt_id="u1", duration=1.2):
    # times as frame arithmetic gives them (0.04 * 3 = 0.12000000000000001)
    words = [TimedSpan("HELLO", 0.04 * 3, 0.04 * 12), TimedSpan("WORLD", 0.04 * 14, 0.04 * 25)]
    tokens = [TimedSpan("HH", 0.12, 0.2), TimedSpan("EH", 0.2, 0.48), TimedSpan("W", 0.56, 0.7),
              TimedSpan("ER", 0.7, 1.0)]
    return UtteranceTimes(utt_id, duration, words, tokens)


def _plain(spans):
    return [(s.label, round(s.start, 6), round(s.end, 6)) for s in spans]


def test_format_ctm_matches_hand_written_lines():
    expected = "u1 1 0.120 0.360 HELLO\nu1 1 0.560 0.440 WORLD\n"
    assert format_ctm(_utt()) == expected
    assert format_ctm(_utt(), level="token").splitlines()[1] == "u1 1 0.200 0.280 EH"


def test_ctm_round_trip_deterministic_and_atomic(tmp_path):
    utts = [_utt("u1"), _utt("u2")]
    path = tmp_path / "out.ctm"
    write_ctm(utts, path)
    first = path.read_bytes()
    write_ctm(utts, path)
    assert path.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ctm"]  # no temporary file left
    back = read_ctm(path)
    assert list(back) == ["u1", "u2"]
    assert _plain(back["u2"]) == [("HELLO", 0.12, 0.48), ("WORLD", 0.56, 1.0)]


def test_read_ctm_drops_silence_and_comments(tmp_path):
    path = tmp_path / "a.ctm"
    path.write_text(";; comment\n"
                    "x 1 0.50 0.20 B 0.9\n"  # out of order, with a confidence column
                    "x 1 0.00 0.10 <eps>\nx 1 0.10 0.30 A\nx 1 0.40 0.10 SIL\nx 1 0.7 0.1 sp\n\n")
    assert _plain(read_ctm(path)["x"]) == [("A", 0.1, 0.4), ("B", 0.5, 0.7)]


@pytest.mark.parametrize("line", ["x 1 0.1 A\n", "x 1 zero 0.1 A\n", "x 1 0.1 -0.2 A\n"])
def test_read_ctm_malformed_line_names_file_and_line(tmp_path, line):
    path = tmp_path / "bad.ctm"
    path.write_text("x 1 0.0 0.1 OK\n" + line)
    with pytest.raises(FsalignError, match=r"bad\.ctm:2: not a CTM line"):
        read_ctm(path)


def test_textgrid_round_trip_through_praatio(tmp_path):
    path = tmp_path / "u1.TextGrid"
    write_textgrid(_utt(), path)
    first = path.read_bytes()
    write_textgrid(_utt(), path)
    assert path.read_bytes() == first
    grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    assert grid.tierNames == ("words", "tokens") and grid.maxTimestamp == 1.2
    # gaps filled with empty intervals, as Praat needs
    assert [tuple(e) for e in grid.getTier("words").entries] == [
        (0.0, 0.12, ""), (0.12, 0.48, "HELLO"), (0.48, 0.56, ""), (0.56, 1.0, "WORLD"), (1.0, 1.2, "")]
    assert _plain(read_textgrid(path)) == _plain(_utt().words)
    assert _plain(read_textgrid(path, tier="tokens")) == _plain(_utt().tokens)
    back = read_utterances(tmp_path)["u1"]
    assert back.duration == 1.2 and _plain(back.tokens) == _plain(_utt().tokens)


def test_write_textgrid_rejects_overlap_and_spans_past_the_end(tmp_path):
    utt = _utt()
    utt.words[1:] = [TimedSpan("WORLD", 0.4, 1.0)]
    with pytest.raises(FsalignError, match="utterance u1: words span 'WORLD'.*overlaps"):
        write_textgrid(utt, tmp_path / "x.TextGrid")
    with pytest.raises(FsalignError, match="utterance u1: a span ends at 1.0 s, after its duration 0.9 s"):
        write_textgrid(_utt(duration=0.9), tmp_path / "x.TextGrid")
    assert not list(tmp_path.iterdir())


def test_read_textgrid_missing_tier(tmp_path):
    write_textgrid(_utt(), tmp_path / "u1.TextGrid")
    with pytest.raises(FsalignError, match=r"u1\.TextGrid: no interval tier 'phones'"):
        read_textgrid(tmp_path / "u1.TextGrid", tier="phones")


def test_cut_with_alignment_loads_back_with_lhotse(tmp_path):
    # a cut starting 2.5 s into its recording: lhotse stores alignment times relative to the recording
    recording = dummy_recording(0, duration=10.0)
    # in a cut, supervision times are relative to the cut start
    sup = SupervisionSegment("s0", recording.id, start=0.0, duration=1.2, text="HELLO WORLD")
    cut = MonoCut("c0", start=2.5, duration=1.2, channel=0, recording=recording, supervisions=[sup])
    aligned = cut_with_alignment(cut, _utt("c0"))
    CutSet.from_cuts([aligned]).to_file(tmp_path / "cuts.jsonl.gz")
    loaded = next(iter(CutSet.from_file(tmp_path / "cuts.jsonl.gz")))
    words = loaded.supervisions[0].alignment["word"]
    assert [(w.symbol, w.start, w.duration) for w in words] == [("HELLO", 2.62, 0.36), ("WORLD", 3.06, 0.44)]
    assert [(w.label, w.start) for w in reference_words(loaded)] == [("HELLO", 0.12), ("WORLD", 0.56)]
    assert alignment_format(tmp_path / "cuts.jsonl.gz") == "cuts"
    back = read_utterances(tmp_path / "cuts.jsonl.gz")["c0"]
    assert back.duration == 1.2
    assert _plain(back.words) == _plain(_utt().words) and _plain(back.tokens) == _plain(_utt().tokens)


def test_cut_with_alignment_splits_between_supervisions():
    recording = dummy_recording(1, duration=4.0)
    sups = [SupervisionSegment("a", recording.id, start=0.0, duration=0.5, text="HELLO"),
            SupervisionSegment("b", recording.id, start=0.5, duration=0.7, text="WORLD")]
    cut = MonoCut("c1", start=0.0, duration=1.2, channel=0, recording=recording, supervisions=sups)
    aligned = cut_with_alignment(cut, _utt("c1"))
    assert [[w.symbol for w in s.alignment["word"]] for s in aligned.supervisions] == [["HELLO"], ["WORLD"]]
    assert [[t.symbol for t in s.alignment["token"]] for s in aligned.supervisions] == [["HH", "EH"], ["W", "ER"]]


def test_cut_without_alignment_is_an_error(tmp_path):
    recording = dummy_recording(2, duration=1.0)
    sup = SupervisionSegment("s", recording.id, start=0.0, duration=1.0, text="A")
    CutSet.from_cuts([MonoCut("c2", 0.0, 1.0, 0, recording=recording, supervisions=[sup])]).to_file(
        tmp_path / "c.jsonl.gz")
    with pytest.raises(FsalignError, match="cut c2 has no word alignment"):
        read_alignments(tmp_path / "c.jsonl.gz")


def test_shipped_reference_formats_agree():
    """The shipped CTM, TextGrids and LibriSpeech alignments of dev-clean-2 hold the same times."""
    ctm = read_utterances(ALIGNMENTS / "dev-clean-2.words.ctm")
    grids = read_utterances(ALIGNMENTS / "dev-clean-2" / "textgrid")
    libri = read_utterances(ALIGNMENTS / "LibriSpeech" / "dev-clean-2")
    phones = read_alignments(ALIGNMENTS / "dev-clean-2.phones.ctm", level="token")
    assert len(ctm) == 64 and set(ctm) == set(grids) == set(libri) == set(phones)
    for utt_id in ctm:
        assert _plain(ctm[utt_id].words) == _plain(grids[utt_id].words) == _plain(libri[utt_id].words)
        assert _plain(grids[utt_id].tokens) == _plain(phones[utt_id])
        assert grids[utt_id].duration == libri[utt_id].duration
        assert all(not t.label.upper() == "SIL" for t in phones[utt_id])
    first = ctm["1201-12011-0002"].words
    assert _plain(first[:2]) == [("I", 0.132, 0.355), ("THINK", 0.355, 0.597)]
    assert grids["1201-12011-0002"].duration == 2.209


def test_alignment_format_errors(tmp_path):
    with pytest.raises(FsalignError, match="does not exist"):
        alignment_format(tmp_path / "none.ctm")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(FsalignError, match="unknown alignment format"):
        alignment_format(tmp_path / "x.txt")
    with pytest.raises(FsalignError, match="neither"):
        alignment_format(tmp_path)
