"""`make demo`: the main job on what ships with the repository.

1. The engine: compile CTC, HMM and relaxed graphs for a few transcripts,
   full-sum scores and Viterbi word spans on random posteriors.
2. The synthetic laboratory (section 6.1): train the FFNN with the HMM
   topology and the stop-gradient posterior-average prior (Table 10's best
   row) on one seed, and report LER / TSE.
3. The shipped corpus: prepare Lhotse cuts, fbank features and tokenizers
   from ``data/LibriSpeech`` into ``exp/demo/data``.

Usage: python -m fsalign.demo [--out exp/demo] [--skip-corpus]
"""
import argparse
import logging
import time
from pathlib import Path

import torch

import fsalign

log = logging.getLogger("fsalign.demo")


def demo_engine() -> None:
    torch.manual_seed(0)
    num_labels = 6  # column 0 = blank / silence, tokens 1..5
    transcripts = [[[1, 2], [3, 3]], [[4], [5, 1, 2]]]
    lengths = torch.tensor([12, 9])
    log_probs = torch.randn(2, 12, num_labels).log_softmax(-1)
    print("== engine: random posteriors, transcripts", transcripts)
    for topo in (fsalign.CtcTopology(num_labels), fsalign.HmmTopology(num_labels),
                 fsalign.RelaxedTopology(num_labels)):
        graphs = topo.compile(transcripts)
        nll = fsalign.full_sum_loss(log_probs, lengths, graphs, posterior_scale=0.7, transition_scale=0.3)
        alis = fsalign.viterbi_align(log_probs, lengths, graphs, posterior_scale=0.7, transition_scale=0.3)
        print(f"{topo.name}: full-sum NLL {[round(x, 3) for x in nll.tolist()]}")
        for b, ali in enumerate(alis):
            words = ", ".join(f"word {w.index}: frames [{w.start}, {w.end})" for w in ali.words)
            print(f"  utt {b}: labels {ali.labels.tolist()}  {words}")


def demo_synthetic() -> None:
    from fsalign.synthetic.runner import run_group
    from fsalign.synthetic.tables import table_rows

    print("\n== synthetic laboratory: Table 10 (FFNN, HMM topology), 2 seeds")
    t0 = time.time()
    for row in table_rows(10)[:1] + table_rows(10)[-1:]:
        results = run_group(row.config, [0, 1])
        metrics = {k: round(sum(r.metrics[k] for r in results) / len(results), 2) for k in results[0].metrics}
        paper = {k: v[0] for k, v in row.paper.items() if v is not None}
        print(f"  {row.label}: ours {metrics}  paper {paper}")
    print(f"  ({time.time() - t0:.1f} s; all tables: python recipes/synthetic/run.py --table N)")


def demo_corpus(out: Path) -> None:
    from fsalign.prepare import main as prepare_main

    corpus = Path("data/LibriSpeech")
    if not corpus.is_dir():
        log.warning("no shipped corpus at %s (run from the repository root); skipping", corpus)
        return
    print(f"\n== shipped corpus: preparing cuts, features and tokenizers into {out / 'data'}")
    t0 = time.time()
    prepare_main([
        "--corpus-dir", str(corpus), "--alignments-dir", "data/alignments/LibriSpeech",
        "--parts", "train-clean-5", "dev-clean-2", "--output-dir", str(out / "data"),
    ])
    print(f"prepared in {time.time() - t0:.1f} s: {sorted(p.name for p in (out / 'data').glob('cuts_*'))}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("exp/demo"))
    ap.add_argument("--skip-corpus", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    demo_engine()
    demo_synthetic()
    if not args.skip_corpus:
        demo_corpus(args.out)
    print(f"\ndemo finished in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
