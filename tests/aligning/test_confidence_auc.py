"""Word confidence separates correct from substituted transcript words (ROC AUC >= 0.9).

All 64 shipped dev-clean-2 utterances (605 words), the oracle character model of
:mod:`tests.align_fixtures` (it hears the reference words, with noise), and transcripts in which
10 % of the words were replaced by other words of the corpus (seeded): the audio stays as it is,
so a substituted word is aligned over speech that says something else. Two controls show that the
threshold is not met by anything that ignores the transcript: a random score, and the frame
posterior of the best column at each frame instead of the aligned one (the same frames, but blind
to which word the transcript put there).
"""
import random

import numpy as np
import pytest
from lhotse import CutSet
from lhotse.utils import fastcopy

from fsalign.aligning.aligner import Aligner, align_cuts
from fsalign.corpus.tokenizers import CharTokenizer
from fsalign.engine.builtin import CtcTopology
from fsalign.results.confidence import roc_auc, substitute_words
from fsalign.scores.posterior import PosteriorScorer
from tests.align_fixtures import OracleModel, make_tiny_cuts, with_oracle_features

THRESHOLD = 0.9


@pytest.fixture(scope="module")
def substituted(tmp_path_factory):
    """(confidence of each word, the word's best-column posterior mean, whether it was substituted)."""
    root = tmp_path_factory.mktemp("confidence")
    cuts = with_oracle_features(CutSet.from_file(make_tiny_cuts(root, 64)), root / "feats")
    spoken = [[w.symbol for w in c.supervisions[0].alignment["word"]] for c in cuts]
    edited, flags = substitute_words(spoken, 0.1, seed=0)
    edited_cuts = CutSet.from_cuts(fastcopy(c, supervisions=[fastcopy(c.supervisions[0], text=" ".join(words))])
                                   for c, words in zip(cuts, edited))
    scorer = PosteriorScorer(OracleModel(), CtcTopology(28))
    aligner = Aligner(scorer, CharTokenizer())
    results = {r.cut_id: r for batch in align_cuts(aligner, edited_cuts, max_duration=60.0) for r in batch}
    scores, blind, wrong = [], [], []
    for cut, words, f in zip(cuts, edited, flags):
        times = results[cut.id].times
        assert [w.label for w in times.words] == words
        best = cut.load_features()[:, :28]
        best = np.exp(best - np.logaddexp.reduce(best, axis=1, keepdims=True)).max(axis=1)
        for w in times.words:
            frames = best[int(round(w.start / 0.01)):int(round(w.end / 0.01))]
            blind.append(float(frames.mean()))
        scores += [w.score for w in times.words]
        wrong += f
    assert sum(wrong) == round(0.1 * len(wrong)) and len(wrong) == 605
    return np.array(scores), np.array(blind), np.array(wrong)


def _auc(values, wrong):
    return roc_auc(values[~wrong].tolist(), values[wrong].tolist())


def test_confidence_separates_correct_from_substituted_words(substituted):
    scores, _, wrong = substituted
    assert ((scores >= 0) & (scores <= 1)).all()
    assert _auc(scores, wrong) >= THRESHOLD
    assert scores[~wrong].mean() > scores[wrong].mean() + 0.2


def test_scores_blind_to_the_transcript_do_not_pass(substituted):
    scores, blind, wrong = substituted
    rng = random.Random(0)
    assert abs(_auc(np.array([rng.random() for _ in scores]), wrong) - 0.5) < 0.1
    assert _auc(blind, wrong) < THRESHOLD - 0.2
