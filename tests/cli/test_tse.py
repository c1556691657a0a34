"""`fsalign tse`: a hand-computed example, and the shipped reference against itself and a perturbed copy."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fsalign.cli.main import main
from fsalign.results.formats import read_alignments

REPO = Path(__file__).resolve().parents[2]
ALIGNMENTS = REPO / "data" / "alignments"

REF_CTM = """\
a 1 0.10 0.20 HELLO
a 1 0.40 0.30 WORLD
b 1 0.00 0.50 YES
c 1 0.00 0.20 ONE
d 1 0.00 0.10 X
"""
HYP_CTM = """\
a 1 0.12 0.20 hello
a 1 0.36 0.40 world
a 1 0.76 0.04 <eps>
b 1 0.10 0.50 YES
c 1 0.00 0.20 TWO
e 1 0.00 0.10 X
"""


def _run(*args):
    return CliRunner().invoke(main, ["tse", *map(str, args)])


def test_tse_hand_computed_example(tmp_path):
    (tmp_path / "ref.ctm").write_text(REF_CTM)
    (tmp_path / "hyp.ctm").write_text(HYP_CTM)
    out = tmp_path / "tse.json"
    result = _run("--ref", tmp_path / "ref.ctm", "--hyp", tmp_path / "hyp.ctm", "--json", out)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    # compared: a (words equal up to case; <eps> ignored) and b; c differs, d only in REF, e only in HYP
    assert r["num_utterances"] == 2 and r["num_words"] == 3
    assert list(r["skipped"]) == ["c"] and "word 1 is 'one'" in r["skipped"]["c"]
    assert r["only_in_ref"] == ["d"] and r["only_in_hyp"] == ["e"]
    # words (ms): HELLO ref [100, 300] hyp [120, 320]: |Δs| 20, |Δe| 20, centres 200 / 220: 20
    #             WORLD ref [400, 700] hyp [360, 760]: |Δs| 40, |Δe| 60, centres 550 / 560: 10
    #             YES   ref [0, 500]   hyp [100, 600]: |Δs| 100, |Δe| 100, centres 250 / 350: 100
    # boundary TSE = (20 + 20 + 40 + 60 + 100 + 100) / (2 * 3) = 340 / 6; centre = (20 + 10 + 100) / 3
    assert r["tse_boundary_ms"] == pytest.approx(340 / 6)
    assert r["tse_centre_ms"] == pytest.approx(130 / 3)
    # two CTMs: utterance length = later last word end: a 760 ms, b 600 ms; 1360 ms in all
    # REF silence: a 760 - 200 - 300 = 260, b 600 - 500 = 100 -> 360 / 1360
    # HYP silence: a 760 - 200 - 400 = 160, b 600 - 500 = 100 -> 260 / 1360
    assert r["durations_from_word_ends"] == 2
    assert r["ref"]["silence_ratio"] == pytest.approx(360 / 1360)
    assert r["hyp"]["silence_ratio"] == pytest.approx(260 / 1360)
    assert r["ref"]["word_duration_ms"] == pytest.approx((200 + 300 + 500) / 3)
    assert r["hyp"]["word_duration_ms"] == pytest.approx((200 + 400 + 500) / 3)
    assert r["ref"]["token_duration_ms"] is None and r["hyp"]["num_tokens"] == 0
    assert "TSE boundary: 56.7 ms, centre: 43.3 ms" in result.output
    assert "silence ratio (in no word): REF 26.5 %, HYP 19.1 %" in result.output


def _pause_ratio(part: str) -> float:
    """Independent of the word spans: LibriSpeech alignment entries tile each utterance, pauses have no word."""
    pause = total = 0
    for path in (ALIGNMENTS / "LibriSpeech" / part).rglob("*.alignment.txt"):
        for line in path.read_text().splitlines():
            _, labels, ends = line.split()
            ends_ms = [0] + [round(float(e) * 1000) for e in ends.strip('"').split(",")]
            for label, start, end in zip(labels.strip('"').split(","), ends_ms, ends_ms[1:]):
                pause += (end - start) * (label == "")
                total += end - start
    return pause / total


def _mean_phone_ms(phones_ctm: Path) -> float:
    durations = [round(float(line.split()[3]) * 1000) for line in phones_ctm.read_text().splitlines()
                 if line.split()[4] != "SIL"]
    return sum(durations) / len(durations)


def test_tse_shipped_reference_against_itself_is_zero(tmp_path):
    grids = ALIGNMENTS / "dev-clean-2" / "textgrid"
    out = tmp_path / "r.json"
    result = _run("--ref", ALIGNMENTS / "dev-clean-2.words.ctm", "--hyp", grids, "--json", out)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert r["num_utterances"] == 64 and r["skipped"] == {} and r["only_in_ref"] == r["only_in_hyp"] == []
    assert r["num_words"] == sum(len(s) for s in read_alignments(ALIGNMENTS / "dev-clean-2.words.ctm").values())
    assert r["tse_boundary_ms"] == pytest.approx(0.0, abs=1e-9) and r["tse_centre_ms"] == pytest.approx(0, abs=1e-9)
    sil, phone_ms = _pause_ratio("dev-clean-2"), _mean_phone_ms(ALIGNMENTS / "dev-clean-2.phones.ctm")
    assert r["durations_from_word_ends"] == 0  # the TextGrids give the lengths
    assert r["ref"]["silence_ratio"] == pytest.approx(sil) and r["hyp"]["silence_ratio"] == pytest.approx(sil)
    assert r["hyp"]["token_duration_ms"] == pytest.approx(phone_ms)  # the TextGrid "phones" tier


def test_tse_shipped_reference_against_perturbed_copy(tmp_path):
    lines = (ALIGNMENTS / "dev-clean-2.words.ctm").read_text().splitlines()
    dropped_utt, removed_utt = "1201-12011-0003", "2201-22011-0000"
    out_lines, expected_sum_ms, words = [], 0, 0
    dropped = False
    for i, line in enumerate(lines):
        utt, chan, start, dur, word = line.split()
        if utt == removed_utt:
            continue  # only in REF
        if utt == dropped_utt:
            if not dropped:
                dropped = True  # one word less: skipped
                continue
            out_lines.append(line)
            continue
        start_ms, end_ms = round(float(start) * 1000), round((float(start) + float(dur)) * 1000)
        ds, de = 10 * (i % 3) - 10, 5 * (i % 4)  # shifts in ms: start -10/0/+10, end 0..15
        if start_ms + ds < 0:
            ds = 0
        expected_sum_ms += abs(ds) + abs(de)
        words += 1
        new_start, new_end = start_ms + ds, end_ms + de
        out_lines.append(f"{utt} {chan} {new_start / 1000:.3f} {(new_end - new_start) / 1000:.3f} {word}")
    hyp = tmp_path / "hyp.ctm"
    hyp.write_text("\n".join(out_lines) + "\n")
    out = tmp_path / "r.json"
    result = _run("--ref", ALIGNMENTS / "LibriSpeech" / "dev-clean-2", "--hyp", hyp, "--json", out)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert list(r["skipped"]) == [dropped_utt] and r["only_in_ref"] == [removed_utt]
    assert r["num_utterances"] == 62 and r["num_words"] == words
    assert r["tse_boundary_ms"] == pytest.approx(expected_sum_ms / (2 * words), abs=1e-6)
    assert r["tse_boundary_ms"] > 4


def test_tse_nothing_to_compare_exits_one(tmp_path):
    (tmp_path / "ref.ctm").write_text("a 1 0.0 0.1 A\n")
    (tmp_path / "hyp.ctm").write_text("b 1 0.0 0.1 A\n")
    result = _run("--ref", tmp_path / "ref.ctm", "--hyp", tmp_path / "hyp.ctm")
    assert result.exit_code == 1
    assert "Error: no utterance could be compared: 1 in REF, 1 in HYP, 0 common ids" in result.output


def test_tse_bad_input_one_line_error(tmp_path):
    (tmp_path / "ref.ctm").write_text("a 1 0.0 0.1 A\na 1 oops 0.1 B\n")
    (tmp_path / "hyp.txt").write_text("")
    result = _run("--ref", tmp_path / "ref.ctm", "--hyp", tmp_path / "ref.ctm")
    assert result.exit_code == 1 and "ref.ctm:2: not a CTM line" in result.output
    assert "Traceback" not in result.output
    result = _run("--ref", tmp_path / "hyp.txt", "--hyp", tmp_path / "hyp.txt")
    assert result.exit_code == 1 and "unknown alignment format" in result.output
    result = _run("--ref", tmp_path / "missing.ctm", "--hyp", tmp_path / "hyp.txt")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_blank_ratio_counts_blank_frames_inside_words():
    from fsalign.results.compare import compare_alignments
    from fsalign.results.formats import TimedSpan, UtteranceTimes

    # a CTC-like hypothesis: the word spans [0.2, 0.6) but only two token frames emit a label
    word = [TimedSpan("ab", 0.2, 0.6)]
    ref = {"u": UtteranceTimes("u", 1.0, word, [TimedSpan("a", 0.2, 0.4), TimedSpan("b", 0.4, 0.6)])}
    hyp = {"u": UtteranceTimes("u", 1.0, word, [TimedSpan("a", 0.2, 0.24), TimedSpan("b", 0.52, 0.6)])}
    c = compare_alignments(ref, hyp)
    assert c.ref.silence_ratio == pytest.approx(0.6) and c.hyp.silence_ratio == pytest.approx(0.6)
    assert c.ref.blank_ratio == pytest.approx(0.6)
    assert c.hyp.blank_ratio == pytest.approx(1.0 - 0.04 - 0.08)  # blank frames count as silence
    # a side without token times has no token-level ratio
    words_only = {"u": UtteranceTimes("u", 1.0, word, [])}
    assert compare_alignments(ref, words_only).hyp.blank_ratio is None


REF_WORDS_CTM = "u 1 0.100 0.300 A\nu 1 0.500 0.400 B\nv 1 0.000 0.500 C\nv 1 0.500 0.500 D\n"
REF_PHONES_CTM = ("u 1 0.000 0.100 SIL\nu 1 0.100 0.150 A1\nu 1 0.250 0.150 A2\nu 1 0.400 0.100 SIL\n"
                  "u 1 0.500 0.200 B1\nu 1 0.700 0.200 B2\n")
HYP_WORDS_CTM = "u 1 0.110 0.270 a\nu 1 0.530 0.370 b\nv 1 0.000 0.500 C\nv 1 0.500 0.500 E\n"
HYP_TOKENS_CTM = "u 1 0.110 0.150 a1\nu 1 0.260 0.120 a2\nu 1 0.530 0.370 B1\n"


def test_tse_onset_offset_within_and_token_errors_from_files_equal_the_library(tmp_path):
    from fsalign.results.compare import compare_alignments, with_tokens
    from fsalign.results.formats import read_utterances

    files = {}
    for name, text in (("ref.ctm", REF_WORDS_CTM), ("ref.phones.ctm", REF_PHONES_CTM), ("hyp.ctm", HYP_WORDS_CTM),
                       ("hyp.tokens.ctm", HYP_TOKENS_CTM)):
        files[name] = tmp_path / name
        files[name].write_text(text)
    out = tmp_path / "r.json"
    result = _run("--ref", files["ref.ctm"], "--hyp", files["hyp.ctm"], "--ref-tokens", files["ref.phones.ctm"],
                  "--hyp-tokens", files["hyp.tokens.ctm"], "--json", out)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    # u: word boundaries off by +10, -20 (A) and +30, 0 ms (B); v skipped (word 2 D vs E)
    assert r["num_words"] == 2 and r["skipped_words"] == 2 and "word 2 is 'd'" in r["skipped"]["v"]
    assert r["tse_boundary_ms"] == pytest.approx(15.0) and r["tse_centre_ms"] == pytest.approx(10.0)
    assert (r["onset_ms"], r["offset_ms"]) == (pytest.approx(20.0), pytest.approx(10.0))
    assert (r["onset_bias_ms"], r["offset_bias_ms"]) == (pytest.approx(20.0), pytest.approx(-10.0))
    assert r["within_ms"] == pytest.approx({"10": 0.5, "20": 0.75, "25": 0.75, "50": 1.0})
    # tokens (SIL dropped): A1 +10/+10, A2 +10/-20 compared; B's (B1 B2 vs B1) not
    assert r["token_boundary_ms"] == pytest.approx(12.5) and (r["num_tokens"], r["token_words"]) == (2, 1)
    assert r["token_within_ms"] == pytest.approx({"10": 0.75, "20": 1.0, "25": 1.0, "50": 1.0})
    assert "onset (word start) error: 20.0 ms (mean signed +20.0 ms)" in result.output
    assert "token boundary error: 12.5 ms over 2 tokens of 1 words" in result.output
    # A and B are apart (a 100 ms pause): both starts come after a pause, both ends before one
    assert r["by_place"]["after_pause"] == {"boundaries": 2, "error_ms": pytest.approx(20.0),
                                            "bias_ms": pytest.approx(20.0)}
    assert r["by_place"]["between_words"] == {"boundaries": 0, "error_ms": None, "bias_ms": None}
    assert ("by place (mean error, mean signed, boundaries): between words n/a (n/a, 0), starts after a pause "
            "20.0 ms (+20.0 ms, 2), ends before a pause 10.0 ms (-10.0 ms, 2)") in result.output
    # the library on the same files
    ref = with_tokens(read_utterances(files["ref.ctm"]), read_alignments(files["ref.phones.ctm"], level="token"))
    hyp = with_tokens(read_utterances(files["hyp.ctm"]), read_alignments(files["hyp.tokens.ctm"], level="token"))
    assert compare_alignments(ref, hyp).to_dict() == r
    # without the token files: no token errors, the same word errors
    plain = tmp_path / "plain.json"
    assert _run("--ref", files["ref.ctm"], "--hyp", files["hyp.ctm"], "--json", plain).exit_code == 0
    p = json.loads(plain.read_text())
    assert p["token_boundary_ms"] is None and p["num_tokens"] == 0 and p["onset_ms"] == r["onset_ms"]
