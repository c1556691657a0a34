"""`make demo`: the main job on what ships with the repository, with the commands a user types.

1. The engine: CTC, HMM and relaxed graphs for a few transcripts, full-sum scores and Viterbi
   word spans on random posteriors.
2. The synthetic laboratory (section 6.1): Table 10's best and worst FFNN rows on two seeds.
3. The shipped corpus (``data/LibriSpeech``): ``recipes/librispeech/prepare.py`` (cuts, fbank,
   tokenizers), then ``recipes/librispeech/train.py`` for a small HMM-phone and a small
   CTC-char model on the CPU.
4. ``fsalign align`` of the dev part with every method (HMM and CTC posteriors with the defaults,
   and with the best path's frame edges and no prior; GradScore, GradScoreExt) into CTM and TextGrids, ``fsalign tse``
   against the shipped reference word times, printed as one table, and ``fsalign plot`` PNGs.
5. ``fsalign align-corpus`` of the same corpus laid out as a user keeps it (``data/mfa_example``:
   speaker folders, mixed audio formats, written transcripts) with the HMM: one TextGrid per file.

Everything goes to ``--out`` (default ``exp/demo``); every step that finished is kept, so an
interrupted demo continues where it stopped when run again.

Usage: python recipes/demo.py [--out exp/demo] [--epochs 20] [--skip-synthetic] [--skip-corpus]
"""
import argparse
import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

import fsalign

log = logging.getLogger("recipes.demo")

CORPUS = Path("data/LibriSpeech")
ALIGNMENTS = Path("data/alignments/LibriSpeech")
REFERENCE = ALIGNMENTS / "dev-clean-2"  # LibriSpeech alignment files: words, pauses, utterance lengths
TRAIN_PART, DEV_PART = "train-clean-5", "dev-clean-2"
MODELS = {  # name -> train.py flags
    "hmm_phone": ["--topology", "hmm", "--unit", "phone"],
    "ctc_char": ["--topology", "ctc", "--unit", "char"],
}
METHODS = [  # (row label, name of its outputs, model, fsalign align flags)
    ("HMM phone (defaults)", "hmm_default", "hmm_phone", []),
    ("CTC char (defaults)", "ctc_default", "ctc_char", []),
    ("HMM phone, frame edges, no prior", "hmm_edges", "hmm_phone", ["--boundaries", "viterbi", "--prior-scale", "0"]),
    ("CTC char, frame edges, no prior", "ctc_edges", "ctc_char", ["--boundaries", "viterbi", "--prior-scale", "0"]),
    ("CTC char, GradScore", "ctc_grad", "ctc_char", ["--scores", "grad"]),
    ("CTC char, GradScoreExt", "ctc_gradext", "ctc_char", ["--scores", "gradext"]),
]
"""The defaults of ``fsalign align`` with posterior scores: posterior-mean boundaries
(``--boundaries expected``) and the checkpoint's corpus prior (Table 14) at β = 1.5 for the HMM, 1 for
CTC; the rows "frame edges, no prior" are the best path's frame edges without a prior."""


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


def _run(cmd: Sequence[str]) -> None:
    """Runs one of the user-facing commands, printed first as the user would type it."""
    shown = ["python" if c == sys.executable else c for c in cmd]
    print("$ " + " ".join(shlex.quote(c) for c in shown), flush=True)
    subprocess.run(list(cmd), check=True)


def demo_corpus(out: Path, epochs: int) -> None:
    data, exp, ali_dir = out / "data", out / "exp", out / "align"
    py = sys.executable
    print(f"\n== shipped corpus: prepare, train, align, score (outputs in {out})")
    t0 = time.time()
    _run([py, "recipes/librispeech/prepare.py", "--corpus-dir", str(CORPUS), "--alignments-dir", str(ALIGNMENTS),
          "--parts", TRAIN_PART, DEV_PART, "--output-dir", str(data), "--unit", "char", "phone"])
    print(f"prepared in {time.time() - t0:.0f} s")
    for name, flags in MODELS.items():
        t1 = time.time()
        if (exp / name / "eval.json").is_file():
            print(f"{exp / name}: trained already (delete the folder to retrain)")
            continue
        _run([py, "recipes/librispeech/train.py", *flags, "--data-dir", str(data), "--train-part", TRAIN_PART,
              "--dev-part", DEV_PART, "--exp-dir", str(exp / name), "--epochs", str(epochs),
              "--no-progress", "--resume"])
        print(f"trained {name} in {time.time() - t1:.0f} s")
    dev_cuts = data / f"cuts_{DEV_PART}.jsonl.gz"
    ali_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (label, name, model, flags) in enumerate(METHODS):
        t1 = time.time()
        ctm = ali_dir / f"{name}.ctm"
        ckpt = exp / model / "best.pt"
        _run([py, "-m", "fsalign.cli.main", "align", "--checkpoint", str(ckpt), "--cuts", str(dev_cuts),
              "--output", str(ctm), *flags, "--no-progress"])
        seconds = time.time() - t1  # the CTM run alone (the command, model loading included)
        if i < 2:  # TextGrids of the two posterior alignments, for Praat
            _run([py, "-m", "fsalign.cli.main", "align", "--checkpoint", str(ckpt), "--cuts", str(dev_cuts),
                  "--output", str(ali_dir / f"textgrid_{model}"), *flags, "--no-progress"])
        tse_json = ctm.with_suffix(".tse.json")
        _run([py, "-m", "fsalign.cli.main", "tse", "--ref", str(REFERENCE), "--hyp", str(ctm),
              "--json", str(tse_json)])
        rows.append((label, json.loads(tse_json.read_text()), seconds))
    first_cut = _first_cut_id(dev_cuts)
    for model, scores in (("hmm_phone", "posterior"), ("ctc_char", "posterior"), ("ctc_char", "grad")):
        _run([py, "-m", "fsalign.cli.main", "plot", "--checkpoint", str(exp / model / "best.pt"),
              "--cuts", str(dev_cuts), "--cut-id", first_cut, "--scores", scores, "--ref", str(REFERENCE),
              "--output", str(out / "plots" / f"{model}_{scores}.png")])
    print_table(rows, exp)
    print(f"corpus part finished in {time.time() - t0:.0f} s")
    demo_own_corpus(out, exp)


def demo_own_corpus(out: Path, exp: Path) -> None:
    """The shipped corpus as a user keeps it (data/mfa_example), aligned with the HMM trained above."""
    print("\n== your own corpus: a folder of recordings and transcripts (data/mfa_example) -> TextGrids")
    t0 = time.time()
    _run([sys.executable, "-m", "fsalign.cli.main", "align-corpus", "data/mfa_example", str(out / "mfa_example"),
          "--checkpoint", str(exp / "hmm_phone" / "best.pt"), "--reference", str(ALIGNMENTS), "--no-progress"])
    print(f"aligned in {time.time() - t0:.0f} s; without --checkpoint align-corpus trains a model on the folder "
          f"first (about 5 minutes here)")


def _first_cut_id(path: Path) -> str:
    from lhotse import load_manifest_lazy

    return next(iter(load_manifest_lazy(path))).id


def print_table(rows, exp: Path) -> None:
    print(f"\n== alignment quality on {DEV_PART} against the reference word times (fsalign tse)")
    header = (f"{'method':<42} {'TSE bound. ms':>13} {'TSE centre ms':>13} {'sil. ratio':>10} {'words':>6} "
              f"{'align s':>8}")
    print(header)
    print("-" * len(header))
    ref_sil = None
    for label, r, seconds in rows:
        ref_sil = r["ref"]["silence_ratio"]
        print(f"{label:<42} {r['tse_boundary_ms']:>13.1f} {r['tse_centre_ms']:>13.1f} "
              f"{r['hyp']['silence_ratio']:>10.3f} {r['num_words']:>6d} {seconds:>8.0f}")
    if ref_sil is not None:
        print(f"{'reference':<42} {'':>13} {'':>13} {ref_sil:>10.3f}")
    for name in MODELS:
        path = exp / name / "eval.json"
        if path.is_file():
            ev = json.loads(path.read_text())
            print(f"{name}: dev greedy LER {ev['ler']:.3f} (epoch {ev['epoch']})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("exp/demo"), help="output folder (default: exp/demo)")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs per model (default: 20)")
    ap.add_argument("--skip-synthetic", action="store_true", help="leave out the synthetic laboratory rows")
    ap.add_argument("--skip-corpus", action="store_true", help="leave out the shipped-corpus part")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    demo_engine()
    if not args.skip_synthetic:
        demo_synthetic()
    if not args.skip_corpus:
        if not CORPUS.is_dir():
            sys.exit(f"no shipped corpus at {CORPUS}: run the demo from the repository root")
        demo_corpus(args.out, args.epochs)
    print(f"\ndemo finished in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
