"""Output files of a corpus alignment: kinds and side files, failed lists, rendering read back with the
format readers and the third-party ones (praatio, lhotse), and merging shard outputs."""
import gzip
from pathlib import Path

import pytest
from lhotse import CutSet, MonoCut, SupervisionSegment
from lhotse.testing.dummies import dummy_recording
from praatio import textgrid

from fsalign.aligning.journal import AlignResult
from fsalign.aligning.output import (
    check_cut_ids,
    failed_path,
    journal_path,
    merge_outputs,
    output_kind,
    render,
    write_failed,
)
from fsalign.errors import FsalignError
from fsalign.results.formats import read_ctm, read_textgrid, read_utterances
from fsalign.results.times import TimedSpan, UtteranceTimes


def _aligned(cut_id, duration, words, tokens):
    return AlignResult(cut_id, duration, UtteranceTimes(cut_id, duration, [TimedSpan(*w) for w in words],
                                                        [TimedSpan(*t) for t in tokens]))


RESULTS = [
    _aligned("u1", 1.2, [("HELLO", 0.12, 0.48), ("WORLD", 0.56, 1.0)],
             [("HH", 0.12, 0.2), ("EH", 0.2, 0.48), ("W", 0.56, 0.7), ("ER", 0.7, 1.0)]),
    AlignResult("u2", 0.5, error="audio: unreadable"),
    _aligned("u3", 2.5, [("A", 0.0, 0.25), ("CAT", 1.5, 2.5)], [("A", 0.0, 0.25), ("C", 1.5, 2.0), ("AT", 2.0, 2.5)]),
]
WORD_CTM = "u1 1 0.120 0.360 HELLO\nu1 1 0.560 0.440 WORLD\nu3 1 0.000 0.250 A\nu3 1 1.500 1.000 CAT\n"


def _plain(spans):
    return [(s.label, round(s.start, 6), round(s.end, 6)) for s in spans]


def _cuts(results=RESULTS):
    cuts = []
    for k, r in enumerate(results):
        recording = dummy_recording(k, duration=r.duration)
        sup = SupervisionSegment(f"{r.cut_id}-sup", recording.id, start=0.0, duration=r.duration, text="X")
        cuts.append(MonoCut(r.cut_id, start=0.0, duration=r.duration, channel=0, recording=recording,
                            supervisions=[sup]))
    return cuts


# ---------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name, kind",
    [("out.ctm", "ctm"), ("OUT.CTM", "ctm"), ("a.b.ctm", "ctm"), ("cuts.jsonl.gz", "cuts"), ("cuts.jsonl", "cuts"),
     ("grids", "textgrid")],
)
def test_output_kind_by_suffix(tmp_path, name, kind):
    assert output_kind(tmp_path / name) == kind
    assert output_kind(str(tmp_path / name)) == kind


def test_output_kind_of_an_existing_folder_with_a_dot_and_a_bad_suffix(tmp_path):
    (tmp_path / "grids.v2").mkdir()
    assert output_kind(tmp_path / "grids.v2") == "textgrid"
    for bad in ("out.txt", "out.json.gz", "out.TextGrid"):
        with pytest.raises(FsalignError) as err:
            output_kind(tmp_path / bad)
        assert f"output {tmp_path / bad}: unknown format" in str(err.value)


def test_side_files_sit_next_to_the_output():
    assert journal_path("exp/out.ctm") == Path("exp/out.ctm.journal.jsonl")
    assert failed_path("exp/out.ctm") == Path("exp/out.ctm.failed.tsv")
    assert journal_path("exp/grids/") == Path("exp/grids.journal.jsonl")  # a folder: the trailing slash goes
    assert failed_path(Path("exp/cuts.jsonl.gz")) == Path("exp/cuts.jsonl.gz.failed.tsv")


@pytest.mark.parametrize("bad", ["spk/utt1", "spk\\utt1", ".hidden", "..", "."])
def test_check_cut_ids_refuses_what_cannot_name_a_textgrid(bad):
    with pytest.raises(FsalignError) as err:
        check_cut_ids("textgrid", ["ok-1", bad, "ok-2"])
    assert repr(bad) in str(err.value) and "cannot name a TextGrid file" in str(err.value)
    check_cut_ids("ctm", ["ok-1", bad])
    check_cut_ids("cuts", [bad])


def test_check_cut_ids_accepts_ordinary_ids():
    check_cut_ids("textgrid", ["1272-128104-0000", "a.b", "x_y-z"])


# ---------------------------------------------------------------------------------------------- failed list


def test_write_failed_header_rows_and_collapsed_whitespace(tmp_path):
    path = tmp_path / "out.ctm.failed.tsv"
    write_failed(path, [["u2", "audio:  unreadable\nfile\tx "], ["u7", "infeasible: 3 frames given, 7 needed"]])
    assert path.read_text(encoding="utf-8") == (
        "cut_id\treason\nu2\taudio: unreadable file x\nu7\tinfeasible: 3 frames given, 7 needed\n")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_write_failed_without_rows_removes_a_stale_list(tmp_path):
    path = tmp_path / "out.ctm.failed.tsv"
    path.write_text("cut_id\treason\nold\tstale\n")
    write_failed(path, [])
    assert not path.exists()
    write_failed(path, [])  # nothing to remove: no error
    assert not path.exists()


# ---------------------------------------------------------------------------------------------- render


@pytest.mark.parametrize("level", ["word", "token"])
def test_render_ctm_leaves_failed_out(tmp_path, level):
    out = tmp_path / "out.ctm"
    (tmp_path / ".out.ctm.tmp4242").write_text("litter of a killed render")
    render("ctm", out, RESULTS, level=level)
    text = out.read_text(encoding="utf-8")
    if level == "word":
        assert text == WORD_CTM
    rows = [line.split() for line in text.splitlines()]
    assert {r[0] for r in rows} == {"u1", "u3"}
    back = read_ctm(out)
    assert list(back) == ["u1", "u3"]
    for r in (RESULTS[0], RESULTS[2]):
        assert _plain(back[r.cut_id]) == _plain(r.times.spans(level))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ctm"]  # litter and temporary file gone


def test_render_textgrids(tmp_path):
    out = tmp_path / "grids"
    out.mkdir()
    (out / ".u1.TextGrid.tmp4242").write_text("litter")
    render("textgrid", out, RESULTS)
    assert sorted(p.name for p in out.iterdir()) == ["u1.TextGrid", "u3.TextGrid"]
    for r in (RESULTS[0], RESULTS[2]):
        path = out / f"{r.cut_id}.TextGrid"
        assert _plain(read_textgrid(path)) == _plain(r.times.words)
        assert _plain(read_textgrid(path, "tokens")) == _plain(r.times.tokens)
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
        assert grid.maxTimestamp == r.duration
        assert [e.label for e in grid.getTier("words").entries] == [w.label for w in r.times.words]
    utts = read_utterances(out)
    assert list(utts) == ["u1", "u3"] and utts["u3"].duration == 2.5


@pytest.mark.parametrize("name", ["cuts.jsonl.gz", "cuts.jsonl"])
def test_render_cuts_read_back_with_lhotse(tmp_path, name):
    out = tmp_path / name
    render("cuts", out, RESULTS, cuts=_cuts())
    first = out.read_bytes()
    loaded = list(CutSet.from_file(out))
    assert [c.id for c in loaded] == ["u1", "u3"]
    words = loaded[1].supervisions[0].alignment["word"]
    assert [(w.symbol, w.start, w.duration) for w in words] == [("A", 0.0, 0.25), ("CAT", 1.5, 1.0)]
    utts = read_utterances(out)
    for r in (RESULTS[0], RESULTS[2]):
        assert _plain(utts[r.cut_id].words) == _plain(r.times.words)
        assert _plain(utts[r.cut_id].tokens) == _plain(r.times.tokens)
    render("cuts", out, RESULTS, cuts=_cuts())
    assert out.read_bytes() == first  # deterministic (no time stamp in the gzip header)
    if name.endswith(".gz"):
        assert first[4:8] == b"\0\0\0\0"  # gzip MTIME field


def test_render_cuts_refuses_another_order(tmp_path):
    with pytest.raises(RuntimeError, match="cut order changed while rendering: u3 != u1"):
        render("cuts", tmp_path / "cuts.jsonl.gz", RESULTS, cuts=_cuts()[::-1])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- merge


def _shards(tmp_path):
    a, b = tmp_path / "a.ctm", tmp_path / "b.ctm"
    render("ctm", a, RESULTS[:2])
    render("ctm", b, RESULTS[2:])
    return a, b


def test_merge_ctms_is_their_concatenation(tmp_path):
    a, b = _shards(tmp_path)
    write_failed(failed_path(a), [["u2", "audio: unreadable"]])
    out = tmp_path / "merged.ctm"
    assert merge_outputs([a, b], out) == 2
    assert out.read_bytes() == a.read_bytes() + b.read_bytes()
    assert out.read_text(encoding="utf-8") == WORD_CTM
    assert failed_path(out).read_text(encoding="utf-8") == "cut_id\treason\nu2\taudio: unreadable\n"


def test_merge_refuses_an_utterance_in_two_inputs_and_leaves_nothing(tmp_path):
    a, b = _shards(tmp_path)
    b.write_text(b.read_text() + "u1 1 0.000 0.100 AGAIN\n")
    out = tmp_path / "merged.ctm"
    with pytest.raises(FsalignError) as err:
        merge_outputs([a, b], out)
    assert str(err.value) == f"utterance u1 is in both input 1 ({a}) and input 2 ({b})"
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ctm", "b.ctm"]  # no temporary file left


def test_merge_input_errors(tmp_path):
    a, b = _shards(tmp_path)
    with pytest.raises(FsalignError, match="does not exist"):
        merge_outputs([a, tmp_path / "c.ctm"], tmp_path / "m.ctm")
    render("cuts", tmp_path / "c.jsonl.gz", RESULTS, cuts=_cuts())
    with pytest.raises(FsalignError, match="is not a ctm output like"):
        merge_outputs([a, tmp_path / "c.jsonl.gz"], tmp_path / "m.ctm")
    journal_path(b).write_text("{}\n")
    with pytest.raises(FsalignError, match="is unfinished"):
        merge_outputs([a, b], tmp_path / "m.ctm")
    assert not (tmp_path / "m.ctm").exists()


def test_merge_cut_files_and_textgrid_folders(tmp_path):
    cuts = _cuts()
    render("cuts", tmp_path / "a.jsonl.gz", RESULTS[:2], cuts=cuts[:2])
    render("cuts", tmp_path / "b.jsonl.gz", RESULTS[2:], cuts=cuts[2:])
    out = tmp_path / "m.jsonl.gz"
    assert merge_outputs([tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"], out) == 2
    parts = b"".join(gzip.decompress((tmp_path / n).read_bytes()) for n in ("a.jsonl.gz", "b.jsonl.gz"))
    assert gzip.decompress(out.read_bytes()) == parts
    assert [c.id for c in CutSet.from_file(out)] == ["u1", "u3"]
    render("textgrid", tmp_path / "ga", RESULTS[:1])
    render("textgrid", tmp_path / "gb", RESULTS[1:])
    assert merge_outputs([tmp_path / "ga", tmp_path / "gb"], tmp_path / "gm") == 2
    for utt, src in (("u1", "ga"), ("u3", "gb")):
        assert (tmp_path / "gm" / f"{utt}.TextGrid").read_bytes() == (tmp_path / src / f"{utt}.TextGrid").read_bytes()
