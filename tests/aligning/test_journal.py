"""The alignment journal: round trips, reopening, torn lines, other settings, and the header's file identity."""
import json
import os

import pytest

from fsalign.aligning.journal import AlignResult, Journal, journal_header
from fsalign.errors import FsalignError
from fsalign.results.times import TimedSpan, UtteranceTimes

HEADER = {"checkpoint": {"path": "/x/best.pt", "size": 10, "mtime_ns": 1}, "shard": [0, 1], "window": 8,
          "batch_duration": 60.0, "scores": "posterior"}


def _aligned(cut_id, duration, words, tokens):
    return AlignResult(cut_id, duration, UtteranceTimes(cut_id, duration, [TimedSpan(*w) for w in words],
                                                        [TimedSpan(*t) for t in tokens]))


RESULTS = [
    _aligned("u1", 1.5, [("HELLO", 0.12, 0.48, 0.9731), ("WORLD", 0.56, 1.0, 0.0457)],
             [("H", 0.12, 0.2, 1.0), ("ELLO", 0.2, 0.48, 0.1), ("WORLD", 0.56, 1.0, 0.0457)]),  # with confidences
    AlignResult("u2", 0.3, error="infeasible: 3 frames given, 7 needed"),
    _aligned("u3", 2.25, [("ÉTÉ", 0.0, 2.25)], [("É", 0.0, 1.0), ("T", 1.0, 1.5), ("É", 1.5, 2.25)]),
    _aligned("u4", 0.5, [], []),  # aligned, no words
]


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "out.ctm.journal.jsonl", HEADER)
    yield j
    j.close()


def _lines(path):
    return path.read_bytes().split(b"\n")


def test_new_journal_holds_the_header_line(tmp_path):
    path = tmp_path / "sub" / "j.jsonl"  # the folder is created
    j = Journal(path, HEADER)
    j.close()
    lines = _lines(path)
    assert lines[-1] == b"" and len(lines) == 2
    assert json.loads(lines[0]) == {"fsalign_align_journal": 2, **HEADER}


def test_append_and_get_round_trip(journal):
    journal.append(RESULTS[:2])
    journal.append(RESULTS[2:])
    for r in RESULTS:
        assert journal.get(r.cut_id) == r
    assert journal.get("u2").times is None
    assert journal.outcomes == {"u1": (1.5, None), "u2": (0.3, "infeasible: 3 frames given, 7 needed"),
                                "u3": (2.25, None), "u4": (0.5, None)}
    assert [w.score for w in journal.get("u1").times.words] == [0.9731, 0.0457]
    assert journal.get("u3").times.words[0].score is None
    # (sum of the word confidences, words with one, words below 0.5)
    assert journal.confidences == {"u1": (0.9731 + 0.0457, 2, 1), "u2": (0, 0, 0), "u3": (0, 0, 0), "u4": (0, 0, 0)}
    # offsets point at each utterance's own line
    data = journal.path.read_bytes()
    header_end = data.index(b"\n") + 1
    assert journal.offsets["u1"] == header_end
    for r in RESULTS:
        line = data[journal.offsets[r.cut_id]:].split(b"\n", 1)[0]
        assert json.loads(line)["id"] == r.cut_id
    assert "ÉTÉ".encode("utf-8") in data  # written as UTF-8, not escaped


def test_reopening_continues_where_it_stopped(tmp_path, journal):
    journal.append(RESULTS[:3])
    offsets, outcomes = dict(journal.offsets), dict(journal.outcomes)
    journal.close()
    again = Journal(journal.path, json.loads(json.dumps(HEADER)))
    try:
        assert again.offsets == offsets and again.outcomes == outcomes
        again.append(RESULTS[3:])
        for r in RESULTS:
            assert again.get(r.cut_id) == r
        assert len(_lines(journal.path)) == 1 + len(RESULTS) + 1
    finally:
        again.close()


def test_header_with_a_tuple_matches_its_json_form(tmp_path):
    header = {**HEADER, "shard": (0, 1)}
    Journal(tmp_path / "j.jsonl", header).close()
    Journal(tmp_path / "j.jsonl", header).close()  # not refused: compared as JSON
    Journal(tmp_path / "j.jsonl", HEADER).close()


def test_a_torn_last_line_is_cut_off_on_reopen(journal):
    journal.append(RESULTS[:2])
    journal.close()
    intact = journal.path.read_bytes()
    with open(journal.path, "ab") as f:
        f.write(b'{"id":"u3","duration":2.25,"wor')  # killed mid-write: no newline
    again = Journal(journal.path, HEADER)
    try:
        assert journal.path.read_bytes() == intact
        assert set(again.offsets) == {"u1", "u2"}
        again.append(RESULTS[2:3])
        assert again.get("u3") == RESULTS[2] and again.get("u1") == RESULTS[0]
    finally:
        again.close()
    for line in _lines(journal.path)[:-1]:
        json.loads(line)


def test_a_line_that_is_not_json_is_refused(journal):
    journal.append(RESULTS[:1])
    journal.close()
    size = journal.path.stat().st_size
    with open(journal.path, "ab") as f:
        f.write(b"garbage\n")
    with pytest.raises(FsalignError, match=f"line at byte {size} is not JSON"):
        Journal(journal.path, HEADER)


def test_other_settings_are_refused_unless_restarting(journal):
    journal.append(RESULTS)
    journal.close()
    before = journal.path.read_bytes()
    other = {**HEADER, "window": 16}
    with pytest.raises(FsalignError) as err:
        Journal(journal.path, other)
    assert "other settings or inputs" in str(err.value) and "--restart" in str(err.value)
    assert journal.path.read_bytes() == before  # a refused journal is left alone
    fresh = Journal(journal.path, other, restart=True)
    try:
        assert fresh.offsets == {} and fresh.outcomes == {}
        assert [json.loads(x) for x in _lines(journal.path)[:-1]] == [{"fsalign_align_journal": 2, **other}]
    finally:
        fresh.close()


def test_a_second_writer_is_refused(journal):
    pytest.importorskip("fcntl")
    with pytest.raises(FsalignError, match="in use by another fsalign align"):
        Journal(journal.path, HEADER)


def test_a_second_writer_is_refused_even_when_restarting(journal):
    pytest.importorskip("fcntl")
    journal.append(RESULTS[:1])
    with pytest.raises(FsalignError, match="in use by another fsalign align"):
        Journal(journal.path, HEADER, restart=True).close()
    journal.append(RESULTS[1:2])
    lines = [json.loads(x) for x in _lines(journal.path)[:-1]]
    assert [x.get("id") for x in lines] == [None, "u1", "u2"]  # the first writer's results are all on disk


def test_journal_header_records_file_identity(tmp_path):
    ckpt, cuts = tmp_path / "best.pt", tmp_path / "cuts.jsonl.gz"
    ckpt.write_bytes(b"c" * 10)
    cuts.write_bytes(b"x" * 100)
    os.utime(cuts, ns=(1_000_000_000, 1_500_000_000))
    header = journal_header(ckpt, cuts, (1, 4), 8, 120.0, {"scores": "gradext", "grad_p": 0.1})
    assert header == {
        "checkpoint": {"path": str(ckpt.resolve()), "size": 10, "mtime_ns": ckpt.stat().st_mtime_ns},
        "cuts": {"path": str(cuts.resolve()), "size": 100, "mtime_ns": 1_500_000_000},
        "shard": [1, 4], "window": 8, "batch_duration": 120.0, "scores": "gradext", "grad_p": 0.1,
    }  # fmt: skip
    Journal(tmp_path / "j.jsonl", header).close()
    # the same bytes touched later: another mtime, another header
    os.utime(cuts, ns=(1_000_000_000, 2_500_000_000))
    touched = journal_header(ckpt, cuts, (1, 4), 8, 120.0, {"scores": "gradext", "grad_p": 0.1})
    assert touched["cuts"]["mtime_ns"] == 2_500_000_000 and touched != header
    # other contents of the same mtime: another size
    cuts.write_bytes(b"x" * 101)
    os.utime(cuts, ns=(1_000_000_000, 1_500_000_000))
    grown = journal_header(ckpt, cuts, (1, 4), 8, 120.0, {"scores": "gradext", "grad_p": 0.1})
    assert grown["cuts"]["size"] == 101 and grown != header
    for changed in (touched, grown):
        with pytest.raises(FsalignError, match="other settings or inputs"):
            Journal(tmp_path / "j.jsonl", changed)


def test_a_journal_of_the_version_without_confidences_is_refused(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps({"fsalign_align_journal": 1, **HEADER}) + "\n"
                    + json.dumps({"id": "u1", "duration": 1.0, "words": [["A", 0.0, 1.0]], "tokens": []}) + "\n")
    with pytest.raises(FsalignError, match="other settings"):
        Journal(path, HEADER)
