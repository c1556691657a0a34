"""Aligning transcripts that do not match the audio (``--allow-mismatch``): words aligned and their TSE.

Data: a cut manifest with features (e.g. the ``work/cuts_all.jsonl.gz`` that ``fsalign align-corpus
data/mfa_example OUT`` writes) and the reference word times of ``data/alignments/*.words.ctm``.
Every cut's transcript is replaced by its spoken words (the reference's word sequence), then
corrupted, seeded: ``--rate`` of all spoken words are deleted from the transcripts (untranscribed
speech) and as many foreign words inserted (a word of the corpus vocabulary that the utterance
does not contain, at a random place of a random utterance).

Rows (one Aligner each, the checkpoint's training scales, posterior scores, ``fsalign align``'s
default corpus prior, the best path's frame edges in every row: a mismatch alignment has no
posterior-mean boundaries):

* ``clean``: the clean transcripts, mismatch not allowed (the baseline);
* ``clean+mismatch``: the clean transcripts with mismatch allowed (must not lose accuracy);
* ``corrupt``: the corrupted transcripts, mismatch not allowed;
* ``corrupt+mismatch``: the corrupted transcripts with mismatch allowed.

Columns: ``kept aligned`` is the share of the words both spoken and transcribed (kept words) that
the alignment aligned (not skipped); TSE (boundary / centre, ms) over the aligned kept words
against the reference, each paired with the reference word it was transcribed from; the same TSE of
the ``clean`` row over the same words (``clean TSE same words``); ``inserted skipped``: share of the
inserted words that were skipped; ``deleted in garbage``: share of the deleted words' reference
time covered by untranscribed (garbage) spans; ``skipped``: transcript words skipped in all.

The model is run once per batch (a cache keyed by the batch's features); ``--grid`` repeats the
mismatch rows for several penalties to choose them.

Usage: python benchmarks/mismatch.py --checkpoint CKPT --cuts CUTS [--rate 0.05] [--seed 0]
       [--garbage-penalty 1.0] [--skip-penalty 6.0] [--garbage-score max]
       [--garbage-entry-penalty 0] [--grid GARBAGE,SKIP,SCORE[,ENTRY] ...] [--prior-scale B] [--threads 1]
       [--limit N]
       [--json out.json]
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

from fsalign.aligning.aligner import Aligner, align_cuts, make_scorer  # noqa: E402
from fsalign.checkpoint import load_checkpoint  # noqa: E402
from fsalign.corpus.cuts import cut_text  # noqa: E402
from fsalign.corpus.normalize import spoken_words  # noqa: E402
from fsalign.engine.mismatch import MismatchOptions  # noqa: E402
from fsalign.results.formats import read_ctm  # noqa: E402


class CachedModel(torch.nn.Module):
    """The checkpoint's model, each batch's log posteriors computed once."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.num_labels, self.subsampling, self.blank = model.num_labels, model.subsampling, model.blank
        self.cache = {}

    def log_probs(self, features, lengths):
        key = (tuple(features.shape), tuple(lengths.tolist()), float(features.double().sum()))
        if key not in self.cache:
            self.cache[key] = self.inner.log_probs(features, lengths)
        return self.cache[key]


def corrupt(spoken, rate, seed):
    """Per utterance: [(word, reference index or None)] with ``rate`` of the words deleted and as many inserted."""
    rng = random.Random(seed)
    slots = [(u, i) for u, words in spoken.items() for i in range(len(words))]
    count = round(rate * len(slots))
    deleted = set(rng.sample(slots, count))
    vocabulary = sorted({w for words in spoken.values() for w in words})
    out = {u: [(w, i) for i, w in enumerate(words) if (u, i) not in deleted] for u, words in spoken.items()}
    ids = sorted(out)
    for _ in range(count):
        u = rng.choice(ids)
        own = set(spoken[u])
        word = rng.choice([w for w in vocabulary if w not in own])
        out[u].insert(rng.randint(0, len(out[u])), (word, None))
    return out, deleted


def with_texts(cuts, texts):
    from lhotse.utils import fastcopy

    return [fastcopy(c, supervisions=[fastcopy(c.supervisions[0], text=" ".join(texts[c.id]))]) for c in cuts]


def run(aligner, cuts):
    results = {}
    for batch in align_cuts(aligner, cuts, max_duration=100.0, window=len(cuts)):
        for r in batch:
            if r.error:
                raise RuntimeError(f"{r.cut_id}: {r.error}")
            results[r.cut_id] = r.times
    return results


def measure(results, transcripts, reference, deleted):
    """The columns of the module docstring for one row."""
    kept = aligned = inserted = inserted_skipped = skipped_total = 0
    boundary = centre = 0.0
    pairs = []  # (utt, reference index) of the aligned kept words
    deleted_time = deleted_covered = 0.0
    for utt, entries in transcripts.items():
        times = results[utt]
        skipped = {w.index for w in times.mismatch.skipped} if times.mismatch else set()
        skipped_total += len(skipped)
        spans = iter(times.words)
        for index, (word, ref_index) in enumerate(entries):
            span = None if index in skipped else next(spans)
            if ref_index is None:
                inserted += 1
                inserted_skipped += span is None
                continue
            kept += 1
            if span is None:
                continue
            aligned += 1
            ref = reference[utt][ref_index]
            boundary += abs(ref.start - span.start) + abs(ref.end - span.end)
            centre += abs(ref.start + ref.end - span.start - span.end) / 2
            pairs.append((utt, ref_index))
        garbage = times.mismatch.untranscribed if times.mismatch else []
        for ref_index, ref in enumerate(reference[utt]):
            if (utt, ref_index) in deleted:
                deleted_time += ref.end - ref.start
                deleted_covered += sum(max(0.0, min(ref.end, g.end) - max(ref.start, g.start)) for g in garbage)
    return {
        "kept_words": kept, "kept_aligned": aligned / kept, "tse_boundary_ms": 1000 * boundary / (2 * aligned),
        "tse_centre_ms": 1000 * centre / aligned, "inserted": inserted,
        "inserted_skipped": inserted_skipped / inserted if inserted else None,
        "deleted_in_garbage": deleted_covered / deleted_time if deleted_time else None, "skipped": skipped_total,
    }, pairs


def same_words_tse(clean_results, reference, pairs):
    """TSE (boundary, centre) of the clean row over the given (utt, reference index) words."""
    boundary = centre = 0.0
    for utt, i in pairs:
        ref, hyp = reference[utt][i], clean_results[utt].words[i]
        boundary += abs(ref.start - hyp.start) + abs(ref.end - hyp.end)
        centre += abs(ref.start + ref.end - hyp.start - hyp.end) / 2
    return 1000 * boundary / (2 * len(pairs)), 1000 * centre / len(pairs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--cuts", required=True, type=Path, help="cut manifest with features")
    parser.add_argument("--reference", type=Path, default=REPO / "data" / "alignments")
    parser.add_argument("--rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--garbage-penalty", type=float, default=MismatchOptions().garbage_penalty)
    parser.add_argument("--skip-penalty", type=float, default=MismatchOptions().skip_penalty)
    parser.add_argument("--garbage-score", default=MismatchOptions().garbage_score)
    parser.add_argument("--garbage-entry-penalty", type=float, default=MismatchOptions().garbage_entry_penalty)
    parser.add_argument("--grid", nargs="*", default=[],
                        help="more GARBAGE,SKIP,SCORE[,ENTRY] settings of the mismatch rows")
    parser.add_argument("--prior-scale", type=float, default=None,
                        help="β of the corpus prior (default: fsalign align's, 1 with a checkpoint that has one)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="the first N cuts only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from lhotse import CutSet

    started, load = time.perf_counter(), os.getloadavg()
    loaded = load_checkpoint(args.checkpoint, "cpu")
    model = CachedModel(loaded.model)
    loaded = loaded._replace(model=model)
    cuts = list(CutSet.from_file(args.cuts))[: args.limit]
    reference = {}
    for path in sorted(args.reference.glob("*.words.ctm")):
        reference.update(read_ctm(path))
    spoken = {c.id: spoken_words(cut_text(c)) for c in cuts}
    for c in cuts:
        if [w.label.casefold() for w in reference[c.id]] != [w.casefold() for w in spoken[c.id]]:
            raise SystemExit(f"{c.id}: the reference words are not the transcript's spoken words")
    corrupted, deleted = corrupt(spoken, args.rate, args.seed)
    clean_cuts = with_texts(cuts, spoken)
    bad_cuts = with_texts(cuts, {u: [w for w, _ in e] for u, e in corrupted.items()})
    clean_entries = {u: [(w, i) for i, w in enumerate(words)] for u, words in spoken.items()}
    settings = [(args.garbage_penalty, args.skip_penalty, args.garbage_score, args.garbage_entry_penalty)]
    settings += [(float(g), float(s), k, float(e)) for g, s, k, e in
                 ((x.split(",") + [0.0])[:4] for x in args.grid)]

    def aligner(options):
        scorer = make_scorer(loaded, "posterior", prior_scale=args.prior_scale, mismatch=options)
        return Aligner(scorer, loaded.tokenizer, "viterbi")

    rows = {}
    t = time.perf_counter()
    clean = run(aligner(None), clean_cuts)
    rows["clean"], _ = measure(clean, clean_entries, reference, set())
    rows["clean"]["seconds"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    rows["corrupt"], _ = measure(run(aligner(None), bad_cuts), corrupted, reference, deleted)
    rows["corrupt"]["seconds"] = round(time.perf_counter() - t, 1)
    for g, s, k, e in settings:
        options = MismatchOptions(garbage_penalty=g, skip_penalty=s, garbage_score=k, garbage_entry_penalty=e)
        name = f"g={g:g} e={e:g} s={s:g} {k}"
        t = time.perf_counter()
        rows[f"clean+mismatch {name}"], _ = measure(run(aligner(options), clean_cuts), clean_entries, reference, set())
        rows[f"clean+mismatch {name}"]["seconds"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        row, pairs = measure(run(aligner(options), bad_cuts), corrupted, reference, deleted)
        row["clean_tse_same_words_ms"] = same_words_tse(clean, reference, pairs)[0]
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows[f"corrupt+mismatch {name}"] = row
    print(f"{len(cuts)} utterances, {sum(len(w) for w in spoken.values())} words; {len(deleted)} deleted and "
          f"{len(deleted)} inserted (rate {args.rate}, seed {args.seed}); load average {load[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after, {time.perf_counter() - started:.0f} s")
    header = ("row", "kept aligned %", "TSE ms", "centre ms", "clean TSE same words", "inserted skipped %",
              "deleted in garbage %", "skipped", "s")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    for name, r in rows.items():
        same = r.get("clean_tse_same_words_ms")
        print(f"| {name} | {pct(r['kept_aligned'])} | {r['tse_boundary_ms']:.1f} | {r['tse_centre_ms']:.1f} | "
              f"{'-' if same is None else f'{same:.1f}'} | {pct(r['inserted_skipped'])} | "
              f"{pct(r['deleted_in_garbage'])} | {r['skipped']} | {r['seconds']} |")
    write_json(args.json, rows, load, args)


if __name__ == "__main__":
    main()
