"""A long recording made of shipped utterances aligns as its pieces do, in bounded memory.

The oracle model of tests/align_fixtures.py hears what the reference says; the shipped utterances'
oracle features are concatenated into one recording with one transcript. Aligned as a long
recording (threshold lowered so that it runs in seconds) it goes through the windowed encoder
and the checkpointed Viterbi, and its word times equal those of the pieces aligned one by one,
shifted by each piece's offset, within a frame. The commands refuse what does not scale (gradient
scores, --allow-mismatch) for long cuts only, naming the cut.
"""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from lhotse import CutSet, Features, MonoCut, SupervisionSegment
from lhotse.features.io import NumpyFilesWriter

import fsalign.engine.chain as chain_module
from fsalign.aligning.aligner import Aligner, align_cuts
from fsalign.aligning.batches import plan_batches
from fsalign.cli.main import main
from fsalign.corpus.tokenizers import CharTokenizer
from fsalign.engine import chain_numba
from fsalign.engine.builtin import CtcTopology
from fsalign.engine.mismatch import MismatchOptions
from fsalign.models.windowed import WindowedLogProbs
from fsalign.scores.posterior import PosteriorScorer
from fsalign.util import LongAudio
from tests.align_fixtures import OracleModel, make_tiny_checkpoint, make_tiny_cuts, oracle_features

N = 16
LONG = LongAudio(threshold_s=20.0, window_s=4.0, context_s=0.5)


class WindowedOracle(WindowedLogProbs, OracleModel):
    """The oracle with the models' windowed forward (its receptive field is one frame)."""

    calls = 0

    def windowed_log_probs(self, *args, **kwargs):
        WindowedOracle.calls += 1
        return super().windowed_log_probs(*args, **kwargs)


def _features(writer, root, cut_id, feats, duration):
    return Features(type="oracle", num_frames=feats.shape[0], num_features=80, frame_shift=0.01, sampling_rate=16000,
                    start=0.0, duration=duration, storage_type=writer.name, storage_path=str(root / "feats"),
                    storage_key=writer.write(cut_id, feats))


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    pieces, feats, offsets, text = [], [], [], []
    with NumpyFilesWriter(root / "feats") as writer:
        offset = 0.0
        for cut in CutSet.from_file(make_tiny_cuts(root, N)):
            words = cut.supervisions[0].alignment["word"]
            f = oracle_features(cut, words, rng)
            duration = f.shape[0] * 0.01
            cut = MonoCut(cut.id, 0.0, duration, 0, features=_features(writer, root, cut.id, f, duration),
                          supervisions=[SupervisionSegment(cut.id, cut.id, 0.0, duration,
                                                           text=" ".join(w.symbol for w in words))])
            pieces.append(cut)
            feats.append(f)
            offsets.append(offset)
            text.append(cut.supervisions[0].text)
            offset += duration
        whole = np.concatenate(feats)
        long = MonoCut("long", 0.0, offset, 0, features=_features(writer, root, "long", whole, offset),
                       supervisions=[SupervisionSegment("long", "long", 0.0, offset, text=" ".join(text))])
    assert offset > 2 * LONG.threshold_s and max(p.duration for p in pieces) < LONG.threshold_s
    return CutSet.from_cuts(pieces), long, offsets


def test_long_recording_aligns_as_its_pieces(recording, monkeypatch):
    pieces, long, offsets = recording
    # frame edges for the pieces too: a long recording gets the best path's boundaries
    aligner = Aligner(PosteriorScorer(WindowedOracle(), CtcTopology(28), long_audio=LONG), CharTokenizer(), "viterbi")
    by_piece = {r.cut_id: r for batch in align_cuts(aligner, pieces, max_duration=100.0) for r in batch}
    assert WindowedOracle.calls == 0  # no piece is long
    checkpointed = []
    real = chain_numba.viterbi_checkpointed
    monkeypatch.setattr(chain_numba, "viterbi_checkpointed", lambda *a: checkpointed.append(a[-4]) or real(*a))
    monkeypatch.setattr(chain_module, "VITERBI_MEMORY_BUDGET", 10_000)  # bytes: far below T x states
    (result,) = [r for batch in align_cuts(aligner, CutSet.from_cuts([long]), max_duration=100.0) for r in batch]
    assert WindowedOracle.calls == 1 and len(checkpointed) == 1 and checkpointed[0] > 1
    assert result.error is None
    want = [(w.label, w.start + off, w.end + off) for cut, off in zip(pieces, offsets)
            for w in by_piece[cut.id].times.words]
    got = [(w.label, w.start, w.end) for w in result.times.words]
    assert [w for w, _, _ in got] == [w for w, _, _ in want] and len(got) > 100
    err = np.abs(np.array([g[1:] for g in got]) - np.array([w[1:] for w in want]))
    assert err.max() <= 0.01 + 1e-6


def test_a_long_cut_is_a_batch_of_its_own(recording):
    pieces, long, _ = recording
    cuts = CutSet.from_cuts(list(pieces) + [long])
    batches = [sorted(c.id for c in b) for b in plan_batches([cuts], max_duration=1000.0, long_s=LONG.threshold_s)]
    assert ["long"] in batches and sum(len(b) for b in batches) == N + 1
    assert len(batches) == 2  # the pieces together, the long one alone


def test_mismatch_refuses_long_cuts_only(recording):
    pieces, long, _ = recording
    scorer = PosteriorScorer(WindowedOracle(), CtcTopology(28), mismatch=MismatchOptions(), long_audio=LONG)
    results = [r for b in align_cuts(Aligner(scorer, CharTokenizer()), CutSet.from_cuts([long, pieces[0]]), 1000.0)
               for r in b]
    reasons = {r.cut_id: r.error for r in results}
    assert reasons[pieces[0].id] is None
    assert reasons["long"].startswith("too long: cut long is ") and "--allow-mismatch" in reasons["long"]


def test_gradient_scores_refuse_a_long_cut_with_one_line_naming_it(tmp_path):
    cuts = make_tiny_cuts(tmp_path, 1)
    ckpt = make_tiny_checkpoint(tmp_path, cuts=cuts)
    args = ["align", "--checkpoint", str(ckpt), "--cuts", str(cuts), "--no-progress", "--long-threshold", "2"]
    result = CliRunner().invoke(main, args + ["--scores", "grad", "--output", str(tmp_path / "g.ctm")])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    cut_id = CutSet.from_file(cuts)[0].id
    assert f"too long: cut {cut_id} is" in line and "--scores posterior" in line
    result = CliRunner().invoke(main, args + ["--output", str(tmp_path / "p.ctm")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.ctm").read_text().count(cut_id) > 3


def test_align_corpus_cannot_train_on_long_recordings_only(tmp_path):
    from fsalign.aligning.workflow import CorpusJob, align_corpus
    from fsalign.errors import FsalignError

    cuts = make_tiny_cuts(tmp_path, 2)
    job = CorpusJob(cuts, tmp_path / "out", unit="char", progress=False, long_threshold=1.0)
    with pytest.raises(FsalignError, match=r"every recording is longer than 1 s, and a model cannot be trained"):
        align_corpus(job)
    stored = CutSet.from_file(tmp_path / "out" / "work" / "cuts_all.jsonl.gz")
    assert len(stored) == 2 and not any(c.has_features for c in stored)  # computed while aligning
    with pytest.raises(FsalignError, match="--long-threshold"):
        CorpusJob(cuts, tmp_path / "other", long_threshold=0).check()


def test_long_recording_gets_posterior_mean_boundaries_stretch_by_stretch(recording, monkeypatch):
    """With the default boundaries a long recording is cut in the best path's pauses and each stretch gets the
    posterior-mean boundaries of its words: close to the whole recording's posterior means (one stretch, what a
    full forward-backward over it gives) and to its pieces' aligned one by one; the frame edges are not."""
    from fsalign.aligning import segments

    pieces, long, offsets = recording

    def words(aligner, cuts):
        (result,) = [r for batch in align_cuts(aligner, cuts, max_duration=100.0) for r in batch]
        assert result.error is None
        return np.array([(w.start, w.end) for w in result.times.words])

    aligner = Aligner(PosteriorScorer(WindowedOracle(), CtcTopology(28), long_audio=LONG), CharTokenizer())
    assert aligner.boundaries == "expected"
    cuts, real = [], segments.pause_segments
    monkeypatch.setattr(segments, "pause_segments", lambda *a: cuts.append(real(*a)) or cuts[-1])
    stretched = words(aligner, CutSet.from_cuts([long]))
    assert len(cuts) == 1 and len(cuts[0]) >= 4  # stretches of >= 7.5 s (750 frames of 10 ms) in 61 s
    monkeypatch.setattr(segments, "SEGMENT_FRAMES", 10 ** 9)
    whole = words(aligner, CutSet.from_cuts([long]))
    assert len(cuts) == 2 and len(cuts[1]) == 1
    assert len(whole) > 100 and np.abs(stretched - whole).max() <= 0.004
    edges = words(Aligner(aligner.scorer, CharTokenizer(), "viterbi"), CutSet.from_cuts([long]))
    assert np.abs(edges - whole).max() > 0.004
    by_piece = {r.cut_id: r for batch in align_cuts(aligner, pieces, max_duration=100.0) for r in batch}
    want = np.array([(w.start + off, w.end + off) for cut, off in zip(pieces, offsets)
                     for w in by_piece[cut.id].times.words])
    off = np.abs(stretched - want).max(axis=1)
    assert (off <= 0.004).mean() >= 0.98  # a piece's last word may end later with the next piece's pause after it


def test_pause_segments_cut_in_the_middle_of_pauses_after_the_target():
    from fsalign.aligning.segments import pause_segments
    from fsalign.results.alignment import Alignment, WordSpan

    # words at frames [0, 3), [3, 5), [8, 10), [11, 20), [24, 26); gaps 0, 3, 1, 4 frames
    spans = [(0, 3), (3, 5), (8, 10), (11, 20), (24, 26)]
    words = [WordSpan(i, s, e, i, i) for i, (s, e) in enumerate(spans)]
    ali = Alignment(labels=torch.zeros(30, dtype=torch.long), score=0.0, words=words)
    assert pause_segments(ali, 30, target=4) == [(0, 6, 0, 2), (6, 22, 2, 4), (22, 30, 4, 5)]
    assert pause_segments(ali, 30, target=7) == [(0, 22, 0, 4), (22, 30, 4, 5)]  # the 1-frame gap is no pause
    assert pause_segments(ali, 30, target=100) == [(0, 30, 0, 5)]
