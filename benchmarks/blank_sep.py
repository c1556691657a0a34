"""Speed of blank separation vs. a full softmax in the setting of Table 15 (appendix A.6).

Only the final linear layer (d_model -> vocabulary) and the (log-)softmax are
measured, for a batch of B=10 sequences of T=1000 frames and C=10000 labels:

* greedy decoding, labels only: full softmax = argmax of all logits; blank
  separation = blank logit first (a one-row matmul), label logits only for the
  frames with p(eps) <= 0.5 (10% here);
* greedy decoding with probabilities: as above plus the probability of the label;
* framewise training step (forward + backward) w.r.t. a fixed random alignment
  with 90% blank frames: full log_softmax vs. label logits only on non-blank frames.

Both heads run in the same process on the same inputs; the script prints and
optionally writes a markdown table with median times and speedups.

Usage: python benchmarks/blank_sep.py [--threads 2] [--repeats 5] [--output FILE.md]
"""
import argparse
import logging
import platform
import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch

from fsalign.models.heads import BlankSeparatedHead, SoftmaxHead

PAPER_SPEEDUP = {"greedy labels": 2.2, "greedy with probs": 3.0, "framewise training": 6.5}
PAPER_MS = {"greedy labels": (11.4, 5.2), "greedy with probs": (15.8, 5.3), "framewise training": (37.2, 5.7)}


def _times_ms(
    fns: Sequence[Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> List[List[float]]:
    """Wall times of each function in ms, per round; the functions alternate in every round,
    so that load from other processes on the machine hits all of them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            fn_times.append((time.perf_counter() - start) * 1e3)
    return times


def build(args: argparse.Namespace, device: torch.device):
    """Heads with identical weights, inputs, and a reference alignment with ``blank_ratio`` blank frames."""
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(args.batch, args.frames, args.d_model, generator=gen)
    full = SoftmaxHead(args.d_model, args.vocab)
    sep = BlankSeparatedHead(args.d_model, args.vocab, blank=0)
    with torch.no_grad():
        sep.linear.weight.copy_(full.linear.weight)
        sep.linear.bias.copy_(full.linear.bias)
        # Make the model emit p(eps) > 0.5 on a fraction blank_ratio of the frames (a trained CTC model is peaky).
        z_blank = h @ sep.linear.weight[0] + sep.linear.bias[0]
        shift = -torch.quantile(z_blank.flatten()[:100000], 1.0 - args.blank_ratio)
        sep.linear.bias[0] += shift
        full.linear.bias[0] += shift
    ref = torch.randint(1, args.vocab, (args.batch, args.frames), generator=gen)
    ref[torch.rand(args.batch, args.frames, generator=gen) < args.blank_ratio] = 0
    lengths = torch.full((args.batch,), args.frames, dtype=torch.long)
    return full.to(device), sep.to(device), h.to(device), lengths.to(device), ref.to(device)


def run(args: argparse.Namespace) -> Dict[str, Dict[str, float]]:
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    full, sep, h, lengths, ref = build(args, device)
    blank_frames = float((sep.blank_logit(h) > 0).float().mean())
    logging.info("frames with p(eps) > 0.5: %.1f%%; reference blank frames: %.1f%%",
                 100 * blank_frames, 100 * float((ref == 0).float().mean()))

    # The fast paths must give the same answers as the full computation.
    with torch.no_grad():
        full_sep_labels = sep.log_probs(h).argmax(-1)
        assert torch.equal(sep.greedy_labels(h, lengths), full_sep_labels)

    h_train = h.clone().requires_grad_(True)

    def train_step(head):
        def step():
            loss = head.framewise_ce(h_train, lengths, ref).sum()
            return torch.autograd.grad(loss, [h_train, head.linear.weight, head.linear.bias])
        return step

    cases = {
        "greedy labels": (lambda: full.greedy_labels(h, lengths), lambda: sep.greedy_labels(h, lengths)),
        "greedy with probs": (lambda: full.greedy_with_probs(h, lengths), lambda: sep.greedy_with_probs(h, lengths)),
        "framewise training": (train_step(full), train_step(sep)),
    }
    results = {}
    for name, (full_fn, sep_fn) in cases.items():
        no_grad = name != "framewise training"
        with torch.set_grad_enabled(not no_grad):
            full_times, sep_times = _times_ms([full_fn, sep_fn], args.repeats, args.warmup, device)
        # Speedup: median over rounds of the paired ratio (robust to load that drifts between rounds).
        ratios = [f / s for f, s in zip(full_times, sep_times)]
        full_ms, sep_ms, speedup = (statistics.median(x) for x in (full_times, sep_times, ratios))
        results[name] = {"full_ms": full_ms, "sep_ms": sep_ms, "speedup": speedup,
                         "min_ratio": min(ratios), "max_ratio": max(ratios)}
        logging.info("%-20s full %9.1f ms  blank-sep %8.1f ms  speedup %5.1fx [%.1f-%.1f] (paper %.1fx)",
                     name, full_ms, sep_ms, speedup, min(ratios), max(ratios), PAPER_SPEEDUP[name])
    results["_blank_frames"] = {"model": blank_frames}
    return results


def to_markdown(args: argparse.Namespace, results: Dict[str, Dict[str, float]]) -> str:
    device = args.device
    if device == "cpu":
        device = f"CPU ({platform.processor() or platform.machine()}), torch threads = {args.threads}"
    lines = [
        "# Blank separation speed (Table 15)",
        "",
        f"`python benchmarks/blank_sep.py --threads {args.threads} --repeats {args.repeats}` — "
        f"B={args.batch}, T={args.frames}, C={args.vocab}, d_model={args.d_model}, "
        f"{100 * args.blank_ratio:.0f}% blank frames (reference alignment; the model's p(eps) > 0.5 on "
        f"{100 * results['_blank_frames']['model']:.1f}% of the frames). Only the final linear layer and the "
        f"(log-)softmax; median of {args.repeats} rounds after {args.warmup} warm-up (speedup: median of the "
        f"per-round ratios); device: {device}; torch {torch.__version__}.",
        "",
        "| Computation | Full softmax [ms] | Blank sep. [ms] | Speedup (range over rounds) | Paper (A10 GPU) speedup |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, paper in PAPER_SPEEDUP.items():
        r = results[name]
        full_ms, sep_ms = PAPER_MS[name]
        lines.append(f"| {name} | {r['full_ms']:.1f} | {r['sep_ms']:.1f} | "
                     f"{r['speedup']:.1f}x ({r['min_ratio']:.1f}-{r['max_ratio']:.1f}) | "
                     f"{paper:.1f}x ({full_ms} / {sep_ms} ms) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--blank-ratio", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", help="write the markdown table here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = run(args)
    table = to_markdown(args, results)
    if args.output:
        with open(args.output, "w") as f:
            f.write(table)
    print(table)


if __name__ == "__main__":
    main()
