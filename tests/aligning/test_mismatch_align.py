"""Aligning transcripts that do not match the audio: shipped utterances with words deleted and inserted.

The model here hears exactly what the reference says (an *oracle*): its features are logits that put each
reference word's letters, in order, over the word's reference span and blank elsewhere, plus noise, at the
10 ms feature rate. So the clean transcript aligns close to the
reference, and what changes with an edited transcript is only what the mismatch graphs do: inserted
words must be skipped, deleted words' audio given to garbage, and the other words stay where the clean
transcript put them. Every output (CTM, TextGrid, cuts, through the journal) marks the skipped words.
The command line is checked with a tiny checkpoint (options, settings refused on resume, byte-identical
resume).
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from lhotse import CutSet
from lhotse.utils import fastcopy
from praatio import textgrid

import fsalign.aligning.run as run_module
from fsalign.aligning.aligner import Aligner, align_cuts, make_scorer
from fsalign.aligning.journal import Journal
from fsalign.aligning.output import render
from fsalign.checkpoint import LoadedCheckpoint
from fsalign.cli.main import main
from fsalign.corpus.tokenizers import CharTokenizer
from fsalign.engine.builtin import CtcTopology
from fsalign.engine.mismatch import MismatchOptions
from fsalign.errors import FsalignError
from fsalign.results.formats import read_ctm, read_utterances
from fsalign.scores.posterior import PosteriorScorer
from tests.align_fixtures import OracleModel, make_tiny_checkpoint, make_tiny_cuts, with_oracle_features

N = 6
# per utterance: (spoken word indices deleted from the transcript, [(position in the edited transcript, word)])
EDITS = [
    ([3], [(1, "ZEPHYR")]),
    ([0], [(4, "QUARTZ")]),  # the first word untranscribed
    ([], [(0, "JUKEBOX")]),  # a word before the first
    ([5], [(2, "WAXWORK"), (3, "FJORD")]),  # two in a row
    ([2, 3], []),  # two untranscribed words in a row
    ([], [(6, "BUZZWORDS")]),  # a word after the last
]


def _edited(words, deleted, inserted):
    """The edited transcript: [(word, index in the spoken words or None for an inserted one)]."""
    kept = [(w, i) for i, w in enumerate(words) if i not in deleted]
    for position, word in inserted:
        kept.insert(position, (word, None))
    return kept


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    root = tmp_path_factory.mktemp("mismatch")
    clean, edited, plans = [], [], {}
    cuts = with_oracle_features(CutSet.from_file(make_tiny_cuts(root, N)), root / "feats")
    for cut, (deleted, inserted) in zip(cuts, EDITS):
        words = cut.supervisions[0].alignment["word"]  # the reference times
        spoken = [w.symbol for w in words]
        plan = _edited(spoken, set(deleted), inserted)
        plans[cut.id] = (plan, [(w.start, w.start + w.duration) for w in words])
        clean.append(fastcopy(cut, supervisions=[fastcopy(cut.supervisions[0], text=" ".join(spoken))]))
        edited.append(fastcopy(cut, supervisions=[fastcopy(cut.supervisions[0], text=" ".join(w for w, _ in plan))]))
    return root, CutSet.from_cuts(clean), CutSet.from_cuts(edited), plans


def _aligner(mismatch):
    # frame edges either way (the default with a mismatch topology), so that the two compare
    return Aligner(PosteriorScorer(OracleModel(), CtcTopology(28), mismatch=mismatch), CharTokenizer(), "viterbi")


def _results(aligner, cuts):
    return {r.cut_id: r for batch in align_cuts(aligner, cuts, max_duration=30.0) for r in batch}


def test_inserted_words_are_skipped_and_the_others_stay_where_the_clean_transcript_put_them(oracle):
    _, clean_cuts, edited_cuts, plans = oracle
    clean = _results(_aligner(None), clean_cuts)
    mismatch = _results(_aligner(MismatchOptions()), edited_cuts)
    shifts, errors, clean_errors, covered, deleted_time = [], [], [], 0.0, 0.0
    for utt, (plan, ref) in plans.items():
        times = mismatch[utt].times
        inserted = [k for k, (_, i) in enumerate(plan) if i is None]
        assert [w.index for w in times.mismatch.skipped] == inserted, utt
        assert [w.label for w in times.mismatch.skipped] == [plan[k][0] for k in inserted]
        kept = [i for _, i in plan if i is not None]
        assert [w.label for w in times.words] == [plan[k][0] for k in range(len(plan)) if plan[k][1] is not None]
        for span, i in zip(times.words, kept):
            before = clean[utt].times.words[i]
            shifts += [abs(span.start - before.start), abs(span.end - before.end)]
            errors += [abs(span.start - ref[i][0]), abs(span.end - ref[i][1])]
            clean_errors += [abs(before.start - ref[i][0]), abs(before.end - ref[i][1])]
        for i, (start, end) in enumerate(ref):
            if i not in kept:
                deleted_time += end - start
                covered += sum(max(0.0, min(end, g.end) - max(start, g.start)) for g in times.mismatch.untranscribed)
    # a boundary next to an edit may move a few frames (10 ms), the others do not; against the reference the
    # edited transcript's words are as good as the clean transcript's
    assert np.percentile(shifts, 95) <= 0.0101 and np.mean(shifts) < 0.005
    assert np.mean(errors) <= np.mean(clean_errors) + 0.002
    assert covered / deleted_time > 0.6


def test_a_clean_transcript_loses_nothing_with_mismatch_allowed(oracle):
    """Nothing skipped, boundaries where they were (garbage may split equal letters of two words that CTC
    would separate by a blank), no worse against the reference."""
    _, clean_cuts, _, plans = oracle
    plain, allowed = _results(_aligner(None), clean_cuts), _results(_aligner(MismatchOptions()), clean_cuts)
    same, plain_errors, allowed_errors = [], [], []
    for utt, result in plain.items():
        assert result.times.mismatch is None
        times = allowed[utt].times
        assert times.mismatch.skipped == [] and len(times.words) == len(result.times.words)
        for a, b, (start, end) in zip(times.words, result.times.words, plans[utt][1]):
            same += [a.start == b.start, a.end == b.end]
            plain_errors += [abs(b.start - start), abs(b.end - end)]
            allowed_errors += [abs(a.start - start), abs(a.end - end)]
    assert np.mean(same) > 0.95
    assert np.mean(allowed_errors) <= np.mean(plain_errors) + 0.001


@pytest.mark.parametrize("kind", ["ctc", "textgrid", "cuts"])
def test_every_output_marks_the_skipped_words(oracle, tmp_path, kind):
    """Through the journal (as fsalign align renders), each output names exactly the inserted words."""
    _, _, edited_cuts, plans = oracle
    journal = Journal(tmp_path / "j.jsonl", {"test": 1})
    journal.append(list(_results(_aligner(MismatchOptions()), edited_cuts).values()))
    out = {"ctc": tmp_path / "out.ctm", "textgrid": tmp_path / "grids", "cuts": tmp_path / "out.jsonl.gz"}[kind]
    render({"ctc": "ctm"}.get(kind, kind), out, [journal.get(c.id) for c in edited_cuts], edited_cuts)
    journal.close()
    expected = {utt: [(k, plan[k][0]) for k in range(len(plan)) if plan[k][1] is None]
                for utt, (plan, _) in plans.items()}
    if kind == "ctc":
        lines = [line.split() for line in out.read_text().splitlines() if line.startswith(";; skipped")]
        found = {utt: [(int(f[4]), f[5]) for f in lines if f[2] == utt] for utt in plans}
        words = read_ctm(out)
    elif kind == "textgrid":
        found = {}
        for utt in plans:
            grid = textgrid.openTextgrid(str(out / f"{utt}.TextGrid"), includeEmptyIntervals=False)
            labels = [w for point in grid.getTier("skipped").entries for w in point.label.split()]
            found[utt] = list(zip([k for k, _ in expected[utt]], labels))
        words = {u: t.words for u, t in read_utterances(out).items()}
    else:
        found = {c.id: [(s["index"], s["word"]) for s in c.custom["skipped_words"]] for c in CutSet.from_file(out)}
        words = {u: t.words for u, t in read_utterances(out).items()}
    assert found == expected
    for utt, (plan, _) in plans.items():
        assert [w.label for w in words[utt]] == [w for w, i in plan if i is not None]


def test_mismatch_needs_posterior_scores():
    checkpoint = LoadedCheckpoint(OracleModel(), CharTokenizer(), CtcTopology(28), {"frame_shift_s": 0.01})
    with pytest.raises(FsalignError, match="needs --scores posterior"):
        make_scorer(checkpoint, "gradext", mismatch=MismatchOptions())
    with pytest.raises(FsalignError, match="mismatch"):
        make_scorer(checkpoint, "posterior", mismatch=True)
    assert make_scorer(checkpoint, "posterior", mismatch=MismatchOptions()).mismatch == MismatchOptions()


# ----------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("mismatch_cli")
    cuts = make_tiny_cuts(root, 4)
    return root, make_tiny_checkpoint(root, train_steps=2), cuts


def _align(ckpt, cuts, output, *extra, expect=0):
    result = CliRunner().invoke(main, ["align", "--checkpoint", str(ckpt), "--cuts", str(cuts), "--output",
                                       str(output), "--batch-duration", "13", "--window", "4", "--no-progress",
                                       "--device", "cpu", *extra])
    assert result.exit_code == expect, result.output + repr(result.exception)
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("extra, message", [
    (["--garbage-penalty", "2"], "--garbage-penalty applies only with --allow-mismatch"),
    (["--garbage-penalty", "2", "--skip-penalty", "1"], "--skip-penalty apply only with --allow-mismatch"),
    (["--allow-mismatch", "--scores", "grad"], "needs --scores posterior"),
    (["--allow-mismatch", "--skip-penalty", "-1"], "skip penalty must be a finite number >= 0"),
    (["--allow-mismatch", "--garbage-penalty", "nan"], "garbage penalty must be a finite number >= 0"),
])  # fmt: skip
def test_mismatch_options_are_checked_before_any_work(tmp_path, extra, message):
    result = _align(tmp_path / "missing.pt", tmp_path / "missing.jsonl.gz", tmp_path / "o.ctm", *extra, expect=1)
    assert message in result.output and "missing" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_outputs_of_one_run_agree_and_resume_is_byte_identical(tiny, tmp_path, monkeypatch):
    root, ckpt, cuts = tiny
    for name in ("a.ctm", "a.jsonl.gz", "grids"):
        _align(ckpt, cuts, tmp_path / name, "--allow-mismatch", "--skip-penalty", "0.5", "--batch-duration", "1")
    from_ctm = {}
    for line in (tmp_path / "a.ctm").read_text().splitlines():
        if line.startswith(";; skipped"):
            f = line.split()
            from_ctm.setdefault(f[2], []).append(f[5])
    from_cuts = {c.id: [s["word"] for s in c.custom["skipped_words"]] for c in CutSet.from_file(tmp_path / "a.jsonl.gz")
                 if c.custom["skipped_words"]}
    from_grids = {}
    for grid_path in sorted((tmp_path / "grids").glob("*.TextGrid")):
        grid = textgrid.openTextgrid(str(grid_path), includeEmptyIntervals=False)
        labels = [w for point in grid.getTier("skipped").entries for w in point.label.split()]
        if labels:
            from_grids[grid_path.stem] = labels
    assert from_ctm == from_cuts == from_grids
    assert sum(map(len, from_ctm.values())) > 0  # a skip penalty of 0.5 makes an untrained model skip words
    # interrupted after the first batch: the rerun renders the same bytes
    original = run_module.align_cuts

    def two_batches_then_fail(*args, **kwargs):
        for k, batch in enumerate(original(*args, **kwargs)):
            if k == 1:
                raise RuntimeError("killed")
            yield batch

    out = tmp_path / "b.jsonl.gz"
    monkeypatch.setattr(run_module, "align_cuts", two_batches_then_fail)
    CliRunner().invoke(main, ["align", "--checkpoint", str(ckpt), "--cuts", str(cuts), "--output", str(out),
                              "--batch-duration", "1", "--window", "4", "--no-progress", "--device", "cpu",
                              "--allow-mismatch", "--skip-penalty", "0.5"])
    assert not out.exists() and (tmp_path / "b.jsonl.gz.journal.jsonl").exists()
    # a rerun with another mismatch setting is refused, as any other setting
    result = _align(ckpt, cuts, out, "--batch-duration", "1", expect=1)
    assert "other settings" in result.output
    result = _align(ckpt, cuts, out, "--batch-duration", "1", "--allow-mismatch", expect=1)
    assert "other settings" in result.output
    monkeypatch.setattr(run_module, "align_cuts", original)
    _align(ckpt, cuts, out, "--batch-duration", "1", "--allow-mismatch", "--skip-penalty", "0.5")
    assert out.read_bytes() == (tmp_path / "a.jsonl.gz").read_bytes()


def test_align_corpus_reports_skipped_words_per_file_and_a_rerun_without_it_aligns_again(tiny, tmp_path):
    from tests.aligning.test_workflow import _copy

    root, ckpt, _ = tiny
    corpus = _copy(tmp_path, extra=False)
    out = tmp_path / "out"
    args = ["align-corpus", str(corpus), str(out), "--checkpoint", str(ckpt), "--no-progress"]
    result = CliRunner().invoke(main, args + ["--allow-mismatch"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    mismatch = report["mismatch"]
    assert mismatch["num_skipped"] == sum(map(len, mismatch["skipped_words"].values()))
    assert "transcripts vs audio" in (out / "report.txt").read_text()
    for stem, words in mismatch["skipped_words"].items():
        grid = textgrid.openTextgrid(str(out / f"{stem}.TextGrid"), includeEmptyIntervals=False)
        assert [w for p in grid.getTier("skipped").entries for w in p.label.split()] == words
    grid = textgrid.openTextgrid(str(next(out.rglob("*.TextGrid"))), includeEmptyIntervals=False)
    assert {"untranscribed", "skipped"} <= set(grid.tierNames)
    result = CliRunner().invoke(main, args, catch_exceptions=False)  # without the option: aligned again
    assert result.exit_code == 0, result.output
    assert "mismatch" not in json.loads((out / "report.json").read_text())
    grid = textgrid.openTextgrid(str(next(out.rglob("*.TextGrid"))), includeEmptyIntervals=False)
    assert not {"untranscribed", "skipped"} & set(grid.tierNames)


def test_align_corpus_refuses_mismatch_with_gradient_scores(tmp_path):
    from fsalign.aligning.workflow import CorpusJob

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with pytest.raises(FsalignError, match="needs --scores posterior"):
        CorpusJob(corpus, tmp_path / "out", scores="grad", allow_mismatch=True).check()
