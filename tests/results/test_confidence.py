"""Word confidence: the AUC helper and the span means by hand, the score matrix's frame probabilities against
an explicit softmax (posteriors with a blank penalty, the garbage column, gradient scores), and every format's
round trip of the scores."""
import itertools
import random

import pytest
import torch
from lhotse import CutSet, MonoCut, SupervisionSegment
from lhotse.testing.dummies import dummy_recording
from praatio import textgrid

from fsalign.engine.builtin import CtcTopology
from fsalign.engine.mismatch import MismatchOptions, MismatchTopology
from fsalign.engine.scales import Scales
from fsalign.results.alignment import TokenSpan
from fsalign.results.confidence import (
    label_probabilities,
    roc_auc,
    span_confidences,
    substitute_words,
    written_confidence,
)
from fsalign.results.formats import CONFIDENCE_TIER, format_ctm, read_ctm, read_utterances, write_ctm, write_textgrid
from fsalign.results.manifests import cut_with_alignment
from fsalign.results.times import TimedSpan, UtteranceTimes
from fsalign.scores.gradscore import gradscore_matrix
from fsalign.scores.matrix import ScoreMatrix
from fsalign.scores.mismatch import with_garbage_column
from fsalign.scores.posterior import PosteriorScorer, apply_blank_penalty


def test_roc_auc_of_a_hand_checked_example():
    # pairs (positive > negative: 1, tie: 1/2): 0.9 beats both, 0.8 beats both, 0.4 loses to 0.5 and ties 0.4
    assert roc_auc([0.9, 0.8, 0.4], [0.5, 0.4]) == pytest.approx(4.5 / 6)
    assert roc_auc([1.0], [0.0]) == 1.0 and roc_auc([0.0], [1.0]) == 0.0 and roc_auc([0.3, 0.3], [0.3]) == 0.5
    with pytest.raises(ValueError, match="both groups"):
        roc_auc([], [0.1])


def test_roc_auc_equals_counting_all_pairs():
    rng = random.Random(1)
    for _ in range(20):
        pos = [rng.randint(0, 5) for _ in range(rng.randint(1, 12))]
        neg = [rng.randint(0, 5) for _ in range(rng.randint(1, 12))]
        pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
        assert roc_auc(pos, neg) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_label_probabilities_are_the_softmax_at_the_label():
    scores = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 3, 2, 2, 4])  # 4: outside the columns (a garbage label)
    got = label_probabilities(scores, labels)
    expected = torch.softmax(scores.double(), -1)
    assert torch.allclose(got[:5], expected[torch.arange(5), labels[:5]]) and torch.isnan(got[5])


def test_span_confidence_is_the_mean_over_token_frames_by_hand():
    probs = torch.tensor([0.9, 0.2, 0.6, 0.8, 0.1, 0.3], dtype=torch.float64)
    labels = torch.tensor([0, 3, 0, 3, 2, 0])  # columns 0: blank
    spans = [TokenSpan(0, 0, 3, 1, 4), TokenSpan(1, 1, 2, 4, 5), TokenSpan(2, 2, 1, 5, 6)]
    # frames 1..3: token frames 1 and 3 -> (0.2 + 0.8) / 2; frame 4 alone; frame 5 is blank only -> its mean
    assert span_confidences(probs, labels, spans, (0,)) == [0.5, 0.1, 0.3]
    assert span_confidences(torch.tensor([0.123456789], dtype=torch.float64), torch.tensor([1]),
                            [TokenSpan(0, 0, 1, 0, 1)], (0,)) == [0.1235]  # rounded to 4 decimals
    assert written_confidence([0.9, None, 0.4]) == 0.4 and written_confidence([None]) is None


def test_posterior_matrix_gives_the_model_posterior_without_blank_penalty_or_garbage():
    g = torch.Generator().manual_seed(3)
    log_probs = torch.randn(2, 7, 5, generator=g).log_softmax(-1)

    class Model(torch.nn.Module):
        num_labels, subsampling, blank = 5, 1, 0

        def log_probs(self, features, lengths):
            return features, lengths

    labels = torch.tensor([0, 1, 1, 0, 2, 4, 3])
    for mismatch in (None, MismatchOptions()):
        matrix = PosteriorScorer(Model(), CtcTopology(5), blank_penalty=-3.0, mismatch=mismatch)(
            log_probs, torch.tensor([7, 7]), [[[1, 2]], [[3]]])
        assert matrix.scores.shape[2] == (5 if mismatch is None else 6)
        penalised = apply_blank_penalty(log_probs, 0, -3.0)
        assert not torch.allclose(matrix.scores[1, :, :5], log_probs[1])  # the matrix holds the penalised scores
        got = matrix.frame_confidences(1, labels)
        assert torch.allclose(got, log_probs[1].double().exp()[torch.arange(7), labels], atol=1e-6)
        assert torch.allclose(penalised[1, :, :5], matrix.scores[1, :, :5])
    garbage_labels = torch.tensor([5, 1, 1, 0, 2, 4, 3])
    assert torch.isnan(matrix.frame_confidences(0, garbage_labels)[0])


def test_garbage_column_is_not_in_the_frame_distribution():
    log_probs = torch.randn(1, 4, 3).log_softmax(-1)
    scores, scales = with_garbage_column(log_probs, Scales(), (0,), "zero")  # garbage log-probability 0: p = 1
    matrix = ScoreMatrix(scores, torch.tensor([4]), MismatchTopology(CtcTopology(3)).compile([[[1]]]), scales)
    assert matrix.distribution_columns(0) == 3
    assert torch.allclose(matrix.frame_confidences(0, torch.tensor([1, 1, 2, 0])),
                          log_probs[0].double().exp()[torch.arange(4), torch.tensor([1, 1, 2, 0])])


def test_gradient_matrix_normalises_over_the_utterance_own_positions():
    g = torch.Generator().manual_seed(5)
    G = torch.randn(2, 4, 9, generator=g)
    transcripts = [[[7, 8], [9, 10]], [[3]]]  # 4 and 1 positions: utterance 1's other columns copy its blank
    matrix = gradscore_matrix(G, torch.tensor([9, 6]), transcripts, "grad")
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    own = matrix.scores[1, :6, :2].double()
    assert matrix.distribution_columns(1) == 2 and matrix.distribution_columns(0) == 5
    assert torch.allclose(matrix.frame_confidences(1, labels), own.softmax(-1)[torch.arange(6), labels])
    # the copies of the blank would have lowered it: all columns give another value
    assert not torch.allclose(matrix.frame_confidences(1, labels),
                              matrix.scores[1, :6].double().softmax(-1)[torch.arange(6), labels])


def test_substitute_words_replaces_the_fraction_with_other_words_seeded():
    words = [["A", "B", "C", "D"], ["E", "F"], ["A", "G", "H", "I"]]
    edited, flags = substitute_words(words, 0.3, seed=2)
    assert sum(map(sum, flags)) == 3 and substitute_words(words, 0.3, seed=2) == (edited, flags)
    vocabulary = {w for ws in words for w in ws}
    for before, after, fs in zip(words, edited, flags):
        for b, a, f in zip(before, after, fs):
            assert (a != b) == f and a in vocabulary
    with pytest.raises(ValueError, match="fraction"):
        substitute_words(words, 1.5)


# ----------------------------------------------------------------------------- the formats

def _scored(utt_id="u1", duration=1.2):
    words = [TimedSpan("HELLO", 0.12, 0.48, 0.9731), TimedSpan("WORLD", 0.56, 1.0, 0.05)]
    tokens = [TimedSpan("H", 0.12, 0.2, 0.5), TimedSpan("ELLO", 0.2, 0.48, 1.0), TimedSpan("WORLD", 0.56, 1.0, 0.05)]
    return UtteranceTimes(utt_id, duration, words, tokens)


def test_ctm_writes_the_confidence_column_and_reads_it_back(tmp_path):
    assert format_ctm(_scored()) == "u1 1 0.120 0.360 HELLO 0.9731\nu1 1 0.560 0.440 WORLD 0.0500\n"
    write_ctm([_scored()], tmp_path / "a.ctm")
    assert read_ctm(tmp_path / "a.ctm")["u1"] == _scored().words
    # 5 columns (no confidence) and a 6th that is no number both read, without a score
    (tmp_path / "b.ctm").write_text("x 1 0.00 0.50 A\nx 1 0.50 0.20 B NA\nx 1 0.70 0.10 C inf\n")
    assert [s.score for s in read_ctm(tmp_path / "b.ctm")["x"]] == [None, None, None]


def test_textgrid_confidence_tier_mirrors_the_words_tier_and_reads_back(tmp_path):
    write_textgrid(_scored(), tmp_path / "u1.TextGrid")
    grid = textgrid.openTextgrid(str(tmp_path / "u1.TextGrid"), includeEmptyIntervals=False)
    tier = grid.getTier(CONFIDENCE_TIER)
    assert [(e.start, e.end, e.label) for e in tier.entries] == [(0.12, 0.48, "0.9731"), (0.56, 1.0, "0.0500")]
    back = read_utterances(tmp_path)["u1"]
    assert back.words == _scored().words
    # without scores, no tier
    plain = UtteranceTimes("u2", 1.2, [TimedSpan("HELLO", 0.12, 0.48)])
    write_textgrid(plain, tmp_path / "u2.TextGrid")
    assert CONFIDENCE_TIER not in textgrid.openTextgrid(str(tmp_path / "u2.TextGrid"), False).tierNames


def test_cuts_store_the_score_in_alignment_items_and_read_it_back(tmp_path):
    recording = dummy_recording(0, duration=10.0)
    sup = SupervisionSegment("s0", recording.id, start=0.0, duration=1.2, text="HELLO WORLD")
    cut = MonoCut("c0", start=2.5, duration=1.2, channel=0, recording=recording, supervisions=[sup])
    CutSet.from_cuts([cut_with_alignment(cut, _scored("c0"))]).to_file(tmp_path / "cuts.jsonl.gz")
    loaded = next(iter(CutSet.from_file(tmp_path / "cuts.jsonl.gz")))
    assert [w.score for w in loaded.supervisions[0].alignment["word"]] == [0.9731, 0.05]
    back = read_utterances(tmp_path / "cuts.jsonl.gz")["c0"]
    assert [w.score for w in back.words] == [0.9731, 0.05] and [t.score for t in back.tokens] == [0.5, 1.0, 0.05]


def test_shifted_keeps_scores_and_scores_take_part_in_equality():
    moved = _scored().shifted(2.0)
    assert [w.score for w in moved.words] == [0.9731, 0.05] and [t.score for t in moved.tokens] == [0.5, 1.0, 0.05]
    assert TimedSpan("A", 0.0, 1.0) == TimedSpan("A", 0.0, 1.0, None) != TimedSpan("A", 0.0, 1.0, 0.5)


def test_aligner_times_give_every_span_its_confidence_and_written_words_the_lowest():
    """Aligner.times on one utterance against the definition computed here from the log posteriors."""
    from fsalign.aligning.aligner import Aligner
    from fsalign.corpus.normalize import normalize
    from fsalign.corpus.tokenizers import CharTokenizer
    from tests.align_fixtures import OracleModel

    tokenizer = CharTokenizer()
    written = normalize("in 1999 we")
    words = [w for token in written for w in token.spoken]
    transcript = tokenizer.encode(" ".join(words))
    features = torch.randn(1, 120, 80, generator=torch.Generator().manual_seed(7))
    aligner = Aligner(PosteriorScorer(OracleModel(), CtcTopology(28)), tokenizer)
    matrix = aligner.scorer(features, torch.tensor([120]), [transcript])
    ali = matrix.best_paths()[0]
    times = aligner.times(matrix, "u", 1.2, words, transcript, ali, written)
    posteriors = features[0, :, :28].log_softmax(-1).double().exp()
    labels = ali.labels.tolist()
    for spans, frames in ((times.words, ali.words), (times.tokens, ali.tokens)):
        for span, f in zip(spans, frames):
            token_frames = [t for t in range(f.start, f.end) if labels[t] != 0]
            assert span.score == pytest.approx(sum(float(posteriors[t, labels[t]]) for t in token_frames)
                                               / len(token_frames), abs=5e-5)
    assert [w.text for w in written] == ["in", "1999", "we"] and len(words) > 3
    assert [w.label for w in times.written] == ["in", "1999", "we"]
    inside = times.words[1:-1]  # the spoken words of "1999"
    assert times.written[1].score == min(w.score for w in inside)
    assert times.written[0].score == times.words[0].score
