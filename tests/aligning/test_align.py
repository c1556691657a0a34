"""`fsalign align` and `fsalign merge` on a tiny checkpoint and a few shipped utterances.

Outputs are checked through the third-party readers (praatio, lhotse, a plain split of the
CTM), against alignments computed directly with the engine (viterbi_align, grad_align),
and byte for byte across kill-and-resume and shard-and-merge.
"""
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from lhotse import CutSet, Features
from lhotse.features.io import NumpyFilesWriter
from lhotse.utils import fastcopy
from praatio import textgrid

import fsalign.aligning.aligner as align_module
from fsalign.aligning.aligner import Aligner
from fsalign.checkpoint import load_checkpoint
from fsalign.cli.align import Journal, journal_path
from fsalign.cli.align import align as align_command
from fsalign.cli.align import merge as merge_command
from fsalign.cli.main import main
from fsalign.corpus.cuts import default_extractor
from fsalign.corpus.tokenizers import normalize_words
from fsalign.engine.viterbi import viterbi_align
from fsalign.scores.gradient import gradient_scores
from fsalign.scores.gradscore import ALIGN_PERCENTILE, grad_align
from fsalign.scores.posterior import apply_blank_penalty
from tests.align_fixtures import (
    make_cut,
    make_tiny_checkpoint,
    make_tiny_cuts,
    shipped_utterances,
)

N_CUTS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    cuts = make_tiny_cuts(root, N_CUTS)
    ckpt = make_tiny_checkpoint(root, train_steps=2)
    return root, ckpt, cuts


@pytest.fixture(scope="module")
def bad_cuts(setup):
    """Four good cuts and one of each kind of bad input, interleaved."""
    root, _, _ = setup
    utts = shipped_utterances()[:8]
    good = [make_cut(u, t, f) for u, t, f in utts[:4]]
    # unreadable audio: a FLAC file overwritten with garbage after the recording was described
    broken = root / "broken.flac"
    broken.write_bytes(utts[4][2].read_bytes())
    unreadable = make_cut("bad-audio", utts[4][1], broken)
    broken.write_bytes(b"this is not a flac file" * 100)
    oov = make_cut("bad-text", "— … !?", utts[5][2])  # punctuation only: no word to align
    short = fastcopy(make_cut("bad-short", utts[6][1], utts[6][2]).truncate(duration=0.2), id="bad-short")
    nan = make_cut("bad-nan", utts[7][1], utts[7][2])
    feats = nan.compute_features(default_extractor())
    feats[5:9] = np.nan
    with NumpyFilesWriter(root / "nan_feats") as writer:
        key = writer.write(nan.id, feats)
    nan.features = Features(type="fbank", num_frames=feats.shape[0], num_features=feats.shape[1], frame_shift=0.01,
                            sampling_rate=16000, start=0.0, duration=nan.duration, storage_type=writer.name,
                            storage_path=str(root / "nan_feats"), storage_key=key)
    cuts = CutSet.from_cuts([good[0], unreadable, good[1], oov, good[2], short, nan, good[3]])
    path = root / "bad_cuts.jsonl.gz"
    cuts.to_file(path)
    return path


def _align(ckpt, cuts, output, *extra, expect=0):
    result = CliRunner().invoke(main, ["align", "--checkpoint", str(ckpt), "--cuts", str(cuts), "--output",
                                       str(output), "--batch-duration", "13", "--window", "4", "--no-progress",
                                       "--device", "cpu", *extra])
    assert result.exit_code == expect, result.output + repr(result.exception)
    assert "Traceback" not in result.output
    return result


def _ctm(path, confidence=False):
    """utt -> [(label, start, end)] (and the confidence column with ``confidence``), parsed with a plain split
    (independent of fsalign.results.formats)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        utt, channel, start, duration, label, score = line.split()
        assert channel == "1"
        entry = (label, float(start), round(float(start) + float(duration), 3))
        out.setdefault(utt, []).append(entry + (float(score),) if confidence else entry)
    return out


def _texts(cuts):
    return {c.id: normalize_words(c.supervisions[0].text) for c in CutSet.from_file(cuts)}


# ----------------------------------------------------------------------------- formats


def test_ctm_words_follow_tokens_and_match_engine(setup, tmp_path):
    """Word CTM: transcript words, each from its first token's start to its last token's end
    (token CTM), at multiples of 40 ms less 15 ms (frame_time_offset) or 0, equal to
    viterbi_align run directly on one cut."""
    root, ckpt, cuts = setup
    edges = ("--boundaries", "viterbi", "--prior-scale", "0")  # the best path's frame edges, no prior
    _align(ckpt, cuts, tmp_path / "w.ctm", *edges)
    _align(ckpt, cuts, tmp_path / "t.ctm", "--level", "token", *edges)
    _align(ckpt, cuts, tmp_path / "workers.ctm", "--num-workers", "2", *edges)
    assert (tmp_path / "workers.ctm").read_bytes() == (tmp_path / "w.ctm").read_bytes()
    words, tokens, texts = _ctm(tmp_path / "w.ctm"), _ctm(tmp_path / "t.ctm"), _texts(cuts)
    assert list(words) == list(texts)  # cuts' order
    for utt, spans in words.items():
        assert [w for w, _, _ in spans] == texts[utt]
        chars = iter(tokens[utt])
        for word, start, end in spans:
            mine = [next(chars) for _ in word]
            assert "".join(t for t, _, _ in mine) == word
            assert (start, end) == (mine[0][1], mine[-1][2])
        for _, start, end in tokens[utt]:
            assert end > start and (start == 0 or abs((start + 0.015) / 0.04 - round((start + 0.015) / 0.04)) < 1e-6)
    # the engine, called directly on the first cut alone
    loaded = load_checkpoint(ckpt)
    cut = next(iter(CutSet.from_file(cuts)))
    feats = torch.as_tensor(cut.compute_features(default_extractor()))[None]
    with torch.no_grad():
        h, lengths = loaded.model.forward_encoder(feats, torch.tensor([feats.shape[1]]))
        log_probs = loaded.model.ctc_log_probs(loaded.model.ctc_logits(h))
    transcript = loaded.tokenizer.encode(cut.supervisions[0].text)
    ali = viterbi_align(log_probs, lengths, loaded.topology.compile([transcript]))[0]
    expected = [(round(max(s * 0.04 - 0.015, 0), 3), round(min(e * 0.04 - 0.015, cut.duration), 3)) for s, e in
                ((w.start, w.end) for w in ali.words)]
    assert [(s, e) for _, s, e in words[cut.id]] == expected
    # confidence column: the mean posterior of the aligned column over the word's non-blank frames
    posteriors = log_probs[0].exp()
    labels = ali.labels.tolist()
    by_hand = []
    for w in ali.words:
        frames = [t for t in range(w.start, w.end) if labels[t] != 0]
        by_hand.append(sum(float(posteriors[t, labels[t]]) for t in frames) / len(frames))
    assert [c for *_, c in _ctm(tmp_path / "w.ctm", confidence=True)[cut.id]] == pytest.approx(by_hand, abs=6e-5)


def test_textgrid_folder_read_by_praatio(setup, tmp_path):
    root, ckpt, cuts = setup
    _align(ckpt, cuts, tmp_path / "w.ctm")
    _align(ckpt, cuts, tmp_path / "grids")
    words, scored_words = _ctm(tmp_path / "w.ctm"), _ctm(tmp_path / "w.ctm", confidence=True)
    durations = {c.id: c.duration for c in CutSet.from_file(cuts)}
    assert sorted(p.stem for p in (tmp_path / "grids").glob("*.TextGrid")) == sorted(words)
    for utt, spans in words.items():
        grid = textgrid.openTextgrid(str(tmp_path / "grids" / f"{utt}.TextGrid"), includeEmptyIntervals=False)
        assert set(grid.tierNames) == {"words", "tokens", "confidence"}
        assert grid.maxTimestamp == pytest.approx(durations[utt])
        got = [(label, round(start, 3), round(end, 3)) for start, end, label in grid.getTier("words").entries]
        assert got == spans
        scored = [(round(start, 3), round(end, 3), float(c)) for start, end, c in grid.getTier("confidence").entries]
        assert scored == [(s, e, c) for _, s, e, c in scored_words[utt]]
        assert "".join(e.label for e in grid.getTier("tokens").entries) == "".join(w for w, _, _ in spans)


def test_cuts_output_loaded_by_lhotse(setup, tmp_path):
    root, ckpt, cuts = setup
    _align(ckpt, cuts, tmp_path / "w.ctm")
    _align(ckpt, cuts, tmp_path / "out.jsonl.gz")
    words, scored = _ctm(tmp_path / "w.ctm"), _ctm(tmp_path / "w.ctm", confidence=True)
    out = CutSet.from_file(tmp_path / "out.jsonl.gz")
    original = {c.id: c for c in CutSet.from_file(cuts)}
    assert [c.id for c in out] == list(original)
    for cut in out:
        sup = cut.supervisions[0]
        assert sup.text == original[cut.id].supervisions[0].text
        got = [(i.symbol, round(i.start, 3), round(i.start + i.duration, 3)) for i in sup.alignment["word"]]
        assert got == words[cut.id]
        assert [i.score for i in sup.alignment["word"]] == [c for *_, c in scored[cut.id]]
        assert "".join(i.symbol for i in sup.alignment["token"]) == "".join(w for w, _, _ in got)
        assert cut.recording.id == original[cut.id].recording.id
    with gzip.open(tmp_path / "out.jsonl.gz", "rb") as f:  # one JSON line per cut
        assert len(f.read().splitlines()) == N_CUTS


def test_precomputed_features_align_like_on_the_fly(setup, tmp_path):
    root, ckpt, _ = setup
    cuts = make_tiny_cuts(tmp_path, 3, features=True)
    assert all(c.has_features for c in CutSet.from_file(cuts))
    _align(ckpt, cuts, tmp_path / "f.ctm")
    assert {u: [w for w, _, _ in s] for u, s in _ctm(tmp_path / "f.ctm").items()} == _texts(cuts)


# ----------------------------------------------------------------------------- scores


def test_posterior_options_match_engine(setup, tmp_path):
    """--topology, --prior-scale, --blank-penalty, --posterior-scale reach viterbi_align as given."""
    root, ckpt, cuts = setup
    _align(ckpt, cuts, tmp_path / "o.ctm", "--topology", "relaxed", "--prior-scale", "0.5",
           "--blank-penalty", "-2", "--posterior-scale", "0.8", "--boundaries", "viterbi")
    got = _ctm(tmp_path / "o.ctm")
    loaded = load_checkpoint(ckpt)
    cut = list(CutSet.from_file(cuts))[2]
    feats = torch.as_tensor(cut.compute_features(default_extractor()))[None]
    with torch.no_grad():
        h, lengths = loaded.model.forward_encoder(feats, torch.tensor([feats.shape[1]]))
        log_probs = apply_blank_penalty(loaded.model.ctc_log_probs(loaded.model.ctc_logits(h)), 0, -2.0)
    from fsalign.engine.builtin import RelaxedTopology

    graphs = RelaxedTopology(loaded.tokenizer.num_labels).compile([loaded.tokenizer.encode(cut.supervisions[0].text)])
    ali = viterbi_align(log_probs, lengths, graphs, posterior_scale=0.8, prior_scale=0.5,
                        log_prior=loaded.metadata["corpus_prior"])[0]
    assert [(s, e) for _, s, e in got[cut.id]] == [
        (round(max(w.start * 0.04 - 0.015, 0), 3), round(min(w.end * 0.04 - 0.015, cut.duration), 3))
        for w in ali.words]
    _align(ckpt, cuts, tmp_path / "d.ctm")
    assert _ctm(tmp_path / "d.ctm") != got  # the options changed something


@pytest.mark.parametrize("scores", ["grad", "gradext"])
def test_gradient_scores_at_10ms_match_engine(setup, tmp_path, scores):
    root, ckpt, _ = setup
    utts = shipped_utterances()
    cuts = tmp_path / "short.jsonl.gz"
    CutSet.from_cuts(make_cut(u, t, f) for u, t, f in (utts[2], utts[5])).to_file(cuts)  # 2.2 s, 2.5 s
    _align(ckpt, cuts, tmp_path / "g.ctm", "--scores", scores, "--boundaries", "viterbi")
    got = _ctm(tmp_path / "g.ctm")
    texts = _texts(cuts)
    assert {u: [w for w, _, _ in s] for u, s in got.items()} == texts
    loaded = load_checkpoint(ckpt)
    cut = next(iter(CutSet.from_file(cuts)))
    feats = torch.as_tensor(cut.compute_features(default_extractor()))[None]
    lengths = torch.tensor([feats.shape[1]])
    transcript = loaded.tokenizer.encode(cut.supervisions[0].text)
    G = gradient_scores(loaded.model, feats, lengths, [transcript], p=0.1)
    ali = grad_align(G, lengths, [transcript], variant=scores, percentile=ALIGN_PERCENTILE)[0]  # the CLI's default
    assert [(s, e) for _, s, e in got[cut.id]] == [
        (round(w.start * 0.01, 3), round(min(w.end * 0.01, cut.duration), 3)) for w in ali.words]


# ----------------------------------------------------------------------------- bad data


def test_bad_inputs_reported_while_others_align(setup, bad_cuts, tmp_path):
    root, ckpt, _ = setup
    result = _align(ckpt, bad_cuts, tmp_path / "out.ctm")
    good = [u for u, _, _ in shipped_utterances()[:4]]
    assert list(_ctm(tmp_path / "out.ctm")) == good
    rows = (tmp_path / "out.ctm.failed.tsv").read_text().splitlines()
    assert rows[0] == "cut_id\treason"
    reasons = dict(row.split("\t") for row in rows[1:])
    assert list(reasons) == ["bad-audio", "bad-text", "bad-short", "bad-nan"]  # cuts' order
    assert reasons["bad-audio"].startswith("unreadable audio: ")
    assert reasons["bad-text"].startswith("no transcript: ") and "no word in" in reasons["bad-text"]
    assert reasons["bad-short"].startswith("too short: 5 frames")
    assert reasons["bad-nan"].startswith("NaN scores")
    assert "aligned 4 of 8 utterances" in result.output and "4 failed" in result.output
    scores = [c for spans in _ctm(tmp_path / "out.ctm", confidence=True).values() for *_, c in spans]
    low = sum(c < 0.5 for c in scores)
    assert f"mean word confidence {sum(scores) / len(scores):.3f}, {low} words below 0.5" in result.output
    assert not journal_path(tmp_path / "out.ctm").exists()


def test_batch_failure_falls_back_to_one_cut_at_a_time(setup, monkeypatch, tmp_path):
    """An error raised for a whole batch costs only the cut that causes it."""
    root, ckpt, cuts = setup
    victim = shipped_utterances()[1][0]
    original = Aligner._align
    calls = []

    def flaky(self, batch):
        calls.append(len(batch))
        if victim in batch.cut_ids:
            raise RuntimeError("simulated out of memory")
        return original(self, batch)

    monkeypatch.setattr(Aligner, "_align", flaky)
    _align(ckpt, cuts, tmp_path / "out.ctm")
    assert victim not in _ctm(tmp_path / "out.ctm") and len(_ctm(tmp_path / "out.ctm")) == N_CUTS - 1
    assert "error: simulated out of memory" in (tmp_path / "out.ctm.failed.tsv").read_text()
    assert max(calls) > 1 and 1 in calls


def test_no_utterance_aligned_exits_non_zero_with_one_line(setup, bad_cuts, tmp_path):
    root, ckpt, _ = setup
    only_bad = CutSet.from_cuts(c for c in CutSet.from_file(bad_cuts) if c.id.startswith("bad-"))
    only_bad.to_file(tmp_path / "only_bad.jsonl.gz")
    result = _align(ckpt, tmp_path / "only_bad.jsonl.gz", tmp_path / "out.ctm", expect=1)
    assert "no utterance aligned" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out.ctm").exists()
    assert len((tmp_path / "out.ctm.failed.tsv").read_text().splitlines()) == 5


@pytest.mark.parametrize("what", ["missing checkpoint", "garbage checkpoint", "missing cuts", "garbage cuts",
                                  "empty cuts", "bad shard", "bad output"])
def test_unusable_inputs_exit_non_zero_with_one_line(setup, tmp_path, what):
    root, ckpt, cuts = setup
    garbage = tmp_path / "garbage.jsonl.gz"
    garbage.write_bytes(b"not gzip at all")
    (tmp_path / "empty.jsonl.gz").write_bytes(b"")
    args = {"empty cuts": dict(cuts=tmp_path / "empty.jsonl.gz"),
            "missing checkpoint": dict(ckpt=tmp_path / "none.pt"), "garbage checkpoint": dict(ckpt=garbage),
            "missing cuts": dict(cuts=tmp_path / "none.jsonl.gz"), "garbage cuts": dict(cuts=garbage),
            "bad shard": dict(extra=["--shard", "2/2"]), "bad output": dict(output=tmp_path / "out.txt")}[what]
    result = _align(args.get("ckpt", ckpt), args.get("cuts", cuts), args.get("output", tmp_path / "o.ctm"),
                    *args.get("extra", []), expect=1)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "TypeError" not in result.output  # a reason a user can act on, not an internal error


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda_is_one_line_error(setup, tmp_path):
    root, ckpt, cuts = setup
    result = _align(ckpt, cuts, tmp_path / "o.ctm", "--device", "cuda", expect=1)
    assert "CUDA is not available" in result.output


# ----------------------------------------------------------------------------- nothing lost

_SLOW_ALIGN = """
import sys, time
import fsalign.cli.align as m
append = m.Journal.append
def slow(self, results):
    append(self, results)
    time.sleep(0.4)
m.Journal.append = slow
from fsalign.cli.main import main
sys.argv[0] = "fsalign"
main()
"""


def test_kill_and_resume_is_byte_identical(setup, monkeypatch, tmp_path):
    """SIGKILL after a few journaled batches, a torn last line, rerun: same bytes as one run,
    and the rerun aligns only the cuts the journal lacks."""
    root, ckpt, cuts = setup
    args = ["align", "--checkpoint", str(ckpt), "--cuts", str(cuts), "--batch-duration", "1", "--window", "4",
            "--no-progress", "--device", "cpu"]
    _align(ckpt, cuts, tmp_path / "full.jsonl.gz", "--batch-duration", "1")
    out = tmp_path / "resumed.jsonl.gz"
    journal = journal_path(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_ALIGN, *args, "--output", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_bytes().splitlines()) >= 3:  # header + 2 cuts
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    entries = len(journal.read_bytes().splitlines()) - 1
    assert 2 <= entries < N_CUTS, "the run was not interrupted in the middle"
    assert not out.exists()  # nothing at the final path before the end
    with open(journal, "ab") as f:
        f.write(b'{"id": "1201-12011-00')  # a write torn by the kill
    aligned = []
    original = Aligner.align
    monkeypatch.setattr(Aligner, "align", lambda self, batch: aligned.extend(batch.order) or original(self, batch))
    _align(ckpt, cuts, out, "--batch-duration", "1")
    assert len(aligned) <= N_CUTS - entries + 1  # at most the batch being written when killed is redone
    assert out.read_bytes() == (tmp_path / "full.jsonl.gz").read_bytes()
    assert not journal.exists()
    # the confidences went through the journal: every word and token of the resumed output has one
    items = [i for c in CutSet.from_file(out) for s in c.supervisions for k in ("word", "token")
             for i in s.alignment[k]]
    assert items and all(i.score is not None and 0 <= i.score <= 1 for i in items)


def test_journal_of_other_settings_is_refused_unless_restart(setup, tmp_path):
    root, ckpt, cuts = setup
    out = tmp_path / "o.ctm"
    first = Journal(journal_path(out), {"scores": "something else"})
    with pytest.raises(ValueError, match="in use by another"):
        Journal(journal_path(out), {"scores": "something else"})  # a second writer of the same output
    first.close()
    result = _align(ckpt, cuts, out, expect=1)
    assert "--restart" in result.output
    _align(ckpt, cuts, out, "--restart")
    assert len(_ctm(out)) == N_CUTS


# ----------------------------------------------------------------------------- scale


@pytest.mark.parametrize("name", ["out.ctm", "out.jsonl.gz", "grids"])
def test_sharded_and_merged_equals_unsharded(setup, bad_cuts, tmp_path, name):
    root, ckpt, _ = setup
    full = tmp_path / "full" / name
    _align(ckpt, bad_cuts, full, "--window", "2")
    shards = []
    for i in range(3):
        shards.append(tmp_path / f"shard{i}" / name)
        result = _align(ckpt, bad_cuts, shards[-1], "--window", "2", "--shard", f"{i}/3")
        assert f"(shard {i}/3)" in result.output
    merged = tmp_path / "merged" / name
    result = CliRunner().invoke(main, ["merge", *map(str, shards), "--output", str(merged)])
    assert result.exit_code == 0, result.output
    if name == "grids":
        files = sorted(p.name for p in full.iterdir())
        assert files == sorted(p.name for p in merged.iterdir()) and len(files) == 4
        assert all((full / f).read_bytes() == (merged / f).read_bytes() for f in files)
    else:
        assert merged.read_bytes() == full.read_bytes()
    failed = Path(str(full) + ".failed.tsv").read_bytes()
    assert Path(str(merged) + ".failed.tsv").read_bytes() == failed and failed.count(b"\n") == 5


def test_shard_from_torchrun_environment(setup, monkeypatch, tmp_path):
    root, ckpt, cuts = setup
    _align(ckpt, cuts, tmp_path / "explicit.ctm", "--shard", "1/3", "--window", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    _align(ckpt, cuts, tmp_path / "env.{shard}.ctm", "--shard", "env", "--window", "2")
    assert (tmp_path / "env.1.ctm").read_bytes() == (tmp_path / "explicit.ctm").read_bytes()
    assert len(_ctm(tmp_path / "env.1.ctm")) == 2


def test_merge_refuses_overlapping_inputs(setup, tmp_path):
    root, ckpt, cuts = setup
    _align(ckpt, cuts, tmp_path / "a.ctm")
    result = CliRunner().invoke(main, ["merge", str(tmp_path / "a.ctm"), str(tmp_path / "a.ctm"),
                                       "--output", str(tmp_path / "m.ctm")])
    assert result.exit_code == 1 and "is in both" in result.output
    assert not (tmp_path / "m.ctm").exists()
    assert not list(tmp_path.glob(".m.ctm.tmp*"))  # no temporary file left behind either


def test_batches_do_not_depend_on_shard_or_done(setup):
    """The plan of a shard is the unsharded plan restricted to it: the same batches."""
    root, ckpt, _ = setup
    cuts = CutSet.from_file(make_tiny_cuts(root / "plan", 10))

    def plan(shard):
        windows = align_module.shard_windows(cuts, 3, shard, 10)
        return [[c.id for c in b] for b in align_module.plan_batches(windows, 9.0)]

    whole = plan((0, 1))
    assert [b for i in range(3) for b in plan((i, 3))] == whole
    durations = {c.id: c.duration for c in cuts}
    assert all(sum(durations[c] for c in b) <= 9.0 or len(b) == 1 for b in whole)
    assert any(len(b) > 1 for b in whole)
    singles = [[c.id for c in b] for b in align_module.plan_batches(align_module.shard_windows(cuts, 3), 0)]
    assert [len(b) for b in singles] == [1] * 10
    window = [b[0] for b in singles[:3]]
    assert [durations[c] for c in window] == sorted((durations[c] for c in window), reverse=True)


def test_help_states_every_default():
    import click

    for command in (align_command, merge_command):
        ctx = click.Context(command, **command.context_settings)  # as `--help` builds it
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                record = param.get_help_record(ctx)[1]
                assert "default:" in record or "required" in record, (command.name, param.name, record)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_alignment_agrees_with_cpu(setup, tmp_path):
    root, ckpt, cuts = setup
    _align(ckpt, cuts, tmp_path / "cpu.ctm")
    _align(ckpt, cuts, tmp_path / "gpu.ctm", "--device", "cuda")
    cpu, gpu = _ctm(tmp_path / "cpu.ctm"), _ctm(tmp_path / "gpu.ctm")
    assert list(cpu) == list(gpu)
    same = sum(a == b for u in cpu for a, b in zip(cpu[u], gpu[u]))
    assert same >= 0.9 * sum(len(s) for s in cpu.values())
