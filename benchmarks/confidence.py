"""Word confidence separating correct from substituted transcript words: ROC AUC per model and score.

Data: a cut manifest with features (e.g. ``exp/demo/data/cuts_dev-clean-2.jsonl.gz`` of
``make demo``, run from the folder it was written from: its feature paths are relative). Every
cut's transcript is replaced by its spoken words, then ``--fraction`` of all words are substituted
by other words of the same transcripts (seeded, :func:`fsalign.results.confidence.substitute_words`);
the audio is left as it is. Each row aligns
the substituted transcripts (the checkpoint's training scales, no mismatch allowed) and measures
how well the word confidence (:mod:`fsalign.results.confidence`) separates the words that were
left alone from the substituted ones.

Columns: ``AUC`` (Mann-Whitney ROC AUC, correct words positive), the same AUC of a random score in
the same run (the baseline: chance), the mean confidence of correct and of substituted words, the
share of each below :data:`~fsalign.results.confidence.LOW_CONFIDENCE` (the low-confidence words a
report lists: substituted words caught, correct words flagged in passing), and seconds.

Usage: python benchmarks/confidence.py --cuts CUTS --row NAME=CHECKPOINT:SCORES [--row ...]
       [--fraction 0.1] [--seed 0] [--threads 1] [--limit N] [--json out.json]
       (SCORES: posterior, grad or gradext)
"""
import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from timing import write_json  # noqa: E402

from fsalign.aligning.aligner import Aligner, align_cuts  # noqa: E402
from fsalign.checkpoint import load_checkpoint  # noqa: E402
from fsalign.corpus.cuts import cut_text  # noqa: E402
from fsalign.corpus.normalize import spoken_words  # noqa: E402
from fsalign.results.confidence import LOW_CONFIDENCE, roc_auc, substitute_words  # noqa: E402


def with_texts(cuts, texts):
    from lhotse.utils import fastcopy

    return [fastcopy(c, supervisions=[fastcopy(c.supervisions[0], text=" ".join(texts[c.id]))]) for c in cuts]


def measure(checkpoint: Path, scores: str, cuts, substituted, seed: int) -> dict:
    """One row: align ``cuts`` with the checkpoint's scores and compare the two groups' confidences."""
    loaded = load_checkpoint(checkpoint, "cpu")
    aligner = Aligner.from_checkpoint(loaded, scores)
    batch_duration = 100.0 if scores == "posterior" else 0.0
    started = time.perf_counter()
    correct, wrong, skipped = [], [], []
    for batch in align_cuts(aligner, cuts, max_duration=batch_duration, window=len(cuts)):
        for r in batch:
            flags = substituted[r.cut_id]
            if r.error or len(r.times.words) != len(flags):
                skipped.append(r.cut_id)
                continue
            for word, flag in zip(r.times.words, flags):
                (wrong if flag else correct).append(word.score)
    seconds = time.perf_counter() - started
    if not correct or not wrong:
        raise SystemExit(f"{checkpoint} ({scores}): no utterance aligned (feature paths are relative to the "
                         f"folder the manifest was written from: run there), e.g. {skipped[:3]}")
    rng = random.Random(seed)
    chance = roc_auc([rng.random() for _ in correct], [rng.random() for _ in wrong])

    def share_low(values):
        return sum(v < LOW_CONFIDENCE for v in values) / len(values)

    return {"auc": roc_auc(correct, wrong), "random_auc": chance, "correct": len(correct), "substituted": len(wrong),
            "mean_correct": sum(correct) / len(correct), "mean_substituted": sum(wrong) / len(wrong),
            "low_correct": share_low(correct), "low_substituted": share_low(wrong), "not_aligned": skipped,
            "seconds": round(seconds, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cuts", required=True, type=Path, help="cut manifest with features")
    parser.add_argument("--row", action="append", required=True, help="NAME=CHECKPOINT:SCORES")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="the first N cuts only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from lhotse import CutSet

    load = os.getloadavg()
    cuts = list(CutSet.from_file(args.cuts))[: args.limit]
    spoken = [spoken_words(cut_text(c)) for c in cuts]
    edited, flags = substitute_words(spoken, args.fraction, args.seed)
    texts = {c.id: words for c, words in zip(cuts, edited)}
    substituted = {c.id: f for c, f in zip(cuts, flags)}
    bad_cuts = with_texts(cuts, texts)
    rows = {}
    for row in args.row:
        name, spec = row.split("=", 1)
        checkpoint, scores = spec.rsplit(":", 1)
        rows[name] = measure(Path(checkpoint), scores, bad_cuts, substituted, args.seed)
    print(f"{len(cuts)} utterances, {sum(map(len, spoken))} words, {sum(map(sum, flags))} substituted "
          f"(fraction {args.fraction}, seed {args.seed}); {args.threads} thread(s), load average {load[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    header = ("row", "AUC", "random AUC", "mean correct", "mean substituted", f"correct < {LOW_CONFIDENCE:g} %",
              f"substituted < {LOW_CONFIDENCE:g} %", "not aligned", "s")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, r in rows.items():
        print(f"| {name} | {r['auc']:.3f} | {r['random_auc']:.3f} | {r['mean_correct']:.3f} | "
              f"{r['mean_substituted']:.3f} | {100 * r['low_correct']:.1f} | {100 * r['low_substituted']:.1f} | "
              f"{len(r['not_aligned'])} | {r['seconds']} |")
    write_json(args.json, rows, load, args)


if __name__ == "__main__":
    main()
