"""Throughput of corpus alignment (`fsalign align`): seconds of audio aligned per wall-clock second.

Model: the recipe's ``--preset small`` Conformer (4 layers, d_model 144, subsampling 4, ~2.5 M
parameters; ``ConformerConfig.from_preset("small", ...)``) with a character tokenizer (28 columns),
**random (untrained) weights** in eval mode: throughput does not depend on what the weights
learned (the Viterbi beam is the same), only alignments would. Data: the shipped ``dev-clean-2``
utterances (lhotse ``prepare_librispeech``), fbank features computed on the fly, as
``fsalign align`` does for cuts without features.

Rows, each through :func:`fsalign.aligning.aligner.align_cuts` (loading + features + model + alignment +
times), one process, CPU:

* posterior: encoder forward, CTC topology Viterbi (``--scores posterior``);
* grad: gradient scores G (one VJP per transcript position, batched) + GradScore Viterbi
  (``--scores grad``);
* "batched": ``--batch-duration`` seconds per batch (default 100, as the CLI; grad: 20 and 10 s,
  as 100 s of gradients exhaust the memory of a 23 GB machine),
  cuts sorted by duration first as ``fsalign align`` does; "one at a time": every cut its own
  batch;
* also the whole command (``fsalign align`` with journal, fsync per batch and CTM rendering),
  posterior batched, to show the cost of the safety machinery.

Prints audio seconds per wall second (median over ``--repeats`` passes; grad: over
``--grad-repeats``) and the ratios batched / one at a time and posterior / grad, with the load
average before and after.

Usage: python benchmarks/align_throughput.py [--utterances 64] [--grad-utterances 16] [--threads 1]
       [--repeats 3] [--grad-repeats 1] [--batch-duration 100] [--grad-batch-durations 20 10]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from lhotse import CutSet
from lhotse.recipes import prepare_librispeech

from fsalign.aligning.aligner import Aligner, align_cuts
from fsalign.checkpoint import LoadedCheckpoint, save_checkpoint
from fsalign.corpus.cuts import FRAME_SHIFT_S
from fsalign.corpus.tokenizers import CharTokenizer
from fsalign.engine.builtin import make_topology
from fsalign.models.conformer import ConformerConfig, ConformerModel

REPO = Path(__file__).resolve().parents[1]


def load_cuts(n: int) -> CutSet:
    manifests = prepare_librispeech(REPO / "data" / "LibriSpeech", dataset_parts=["dev-clean-2"])["dev-clean-2"]
    cuts = CutSet.from_manifests(recordings=manifests["recordings"], supervisions=manifests["supervisions"])
    return CutSet.from_cuts(sorted(cuts, key=lambda c: c.id)[:n])


def small_checkpoint() -> LoadedCheckpoint:
    tokenizer = CharTokenizer()
    torch.manual_seed(0)
    config = ConformerConfig.from_preset("small", tokenizer.num_labels, spec_augment=False, dropout=0.0)
    model = ConformerModel(config).eval()
    metadata = {"topology": {"kind": "ctc", "params": {}}, "criterion": {"posterior_scale": 1.0,
                "transition_scale": 1.0}, "frame_shift_s": FRAME_SHIFT_S, "subsampling": config.subsampling,
                "corpus_prior": None, "model_config": config.to_dict(), "tokenizer": tokenizer.to_dict()}
    return LoadedCheckpoint(model, tokenizer, make_topology("ctc", tokenizer.num_labels), metadata)


def throughput(aligner: Aligner, cuts: CutSet, batch_duration: float, repeats: int) -> float:
    """Median audio seconds aligned per wall second over ``repeats`` passes."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        results = [r for batch in align_cuts(aligner, cuts, batch_duration, window=len(cuts)) for r in batch]
        wall = time.perf_counter() - start
        failed = [r.error for r in results if r.error]
        if failed:
            raise RuntimeError(f"benchmark cuts failed to align: {failed[:3]}")
        rates.append(sum(r.duration for r in results) / wall)
    return statistics.median(rates)


def command_throughput(checkpoint: LoadedCheckpoint, cuts: CutSet, batch_duration: float, repeats: int) -> float:
    """The same through ``fsalign align`` (journal, fsync per batch, CTM), checkpoint on disk."""
    from click.testing import CliRunner

    from fsalign.cli.main import main

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, tokenizer, _, metadata = checkpoint
        save_checkpoint({**metadata, "model": model.state_dict()}, tmp / "small.pt")
        cuts.to_file(tmp / "cuts.jsonl.gz")
        rates = []
        for k in range(repeats):
            start = time.perf_counter()
            result = CliRunner().invoke(main, [
                "align", "--checkpoint", str(tmp / "small.pt"), "--cuts", str(tmp / "cuts.jsonl.gz"),
                "--output", str(tmp / f"out{k}.ctm"), "--batch-duration", str(batch_duration), "--no-progress",
                "--device", "cpu", "--window", str(len(cuts)),
            ])  # fmt: skip
            wall = time.perf_counter() - start
            if result.exit_code != 0:
                raise RuntimeError(result.output)
            rates.append(sum(c.duration for c in cuts) / wall)
    return statistics.median(rates)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=64, help="cuts for posterior rows")
    parser.add_argument("--grad-utterances", type=int, default=16,
                        help="cuts for grad rows (G is costly): evenly spread over the posterior cuts' durations")
    parser.add_argument("--grad-batch-durations", type=float, nargs="+", default=[20.0, 10.0],
                        help="batch durations of the batched grad rows")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grad-repeats", type=int, default=1)
    parser.add_argument("--batch-duration", type=float, default=100.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    checkpoint = small_checkpoint()
    cuts = load_cuts(args.utterances)
    by_duration = sorted(cuts, key=lambda c: c.duration)
    step = max(1, len(by_duration) // args.grad_utterances)
    grad_cuts = CutSet.from_cuts(sorted(by_duration[::step][: args.grad_utterances], key=lambda c: c.id))
    audio = sum(c.duration for c in cuts)
    grad_audio = sum(c.duration for c in grad_cuts)
    print(f"model: preset small, {checkpoint.model.num_params / 1e6:.2f} M parameters, random weights; "
          f"torch {torch.__version__}, {args.threads} thread(s), CPU; "
          f"posterior: {len(cuts)} cuts, {audio:.1f} s; grad: {len(grad_cuts)} cuts, {grad_audio:.1f} s")
    rows = {}
    posterior = Aligner.from_checkpoint(checkpoint, "posterior")
    grad = Aligner.from_checkpoint(checkpoint, "grad")
    throughput(posterior, CutSet.from_cuts(list(cuts)[:2]), args.batch_duration, 1)  # warm-ups
    throughput(grad, CutSet.from_cuts([min(cuts, key=lambda c: c.duration)]), args.batch_duration, 1)
    rows["posterior", f"batched ({args.batch_duration:g} s)"] = throughput(posterior, cuts, args.batch_duration,
                                                                           args.repeats)
    rows["posterior", "one at a time"] = throughput(posterior, cuts, 0, args.repeats)
    command = f"fsalign align command (journal + CTM), batched ({args.batch_duration:g} s)"
    rows["posterior", command] = command_throughput(checkpoint, cuts, args.batch_duration, args.repeats)
    for seconds in args.grad_batch_durations:
        rows["grad", f"batched ({seconds:g} s)"] = throughput(grad, grad_cuts, seconds, args.grad_repeats)
    rows["grad", "one at a time"] = throughput(grad, grad_cuts, 0, args.grad_repeats)
    load_after = os.getloadavg()
    print("\n| scores | batching | audio s / wall s | real-time factor |")
    print("|---|---|---:|---:|")
    for (scores, how), rate in rows.items():
        print(f"| {scores} | {how} | {rate:.2f} | {1 / rate:.4f} |")
    print()
    for scores in ("posterior", "grad"):
        single = rows[scores, "one at a time"]
        ratios = ", ".join(f"{how} {rate / single:.2f}x" for (sc, how), rate in rows.items()
                           if sc == scores and how != "one at a time")
        print(f"{scores}, relative to one at a time: {ratios}")
    best = lambda scores: max(rate for (sc, _), rate in rows.items() if sc == scores)  # noqa: E731
    print(f"posterior / grad (fastest rows): {best('posterior') / best('grad'):.1f}x")
    print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    sys.exit(main())
