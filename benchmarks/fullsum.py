"""Full sum + backward: fsalign.full_sum_loss (chain kernels; k2) vs torch's ctc_loss, 1 thread.

Inputs, worker processes, rounds, the peak-memory method and the bench environment: as
benchmarks/viterbi.py (same grid: B=8, (T, C) in {(800, 32), (800, 5000), (3000, 512)},
S = T/4, CTC topology, float32 log-probs). Each method computes the per-utterance CTC
negative log-likelihood of a leaf (B, T, C) tensor of log-probs and its gradient
(``loss.sum().backward()``):

* chain: ``topology.compile`` + ``fsalign.full_sum_loss`` with the default engine, i.e. the
  exact chain kernels (float64 sums);
* k2: the same call with ``engine="k2"`` (``k2.intersect_dense`` over the whole lattice, split
  into groups of at most ``fsalign.engine.fullsum.MAX_LATTICE_ARCS`` arcs);
* ctc_loss: ``torch.nn.functional.ctc_loss(reduction="sum")`` of the project's torch (1.13);
  ``ctc_loss_t2``: the same in the bench environment's torch 2.x, when it exists.

Usage: python benchmarks/fullsum.py [--rounds 5] [--calls 3] [--methods chain ctc_loss ...]
       [--sizes 800x32 800x5000 3000x512] [--k2-timeout 300] [--json out.json]
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import viterbi as common  # noqa: E402  (the worker machinery)


def _method(name, data):
    """A zero-argument callable: loss of method ``name`` on ``data`` and its backward."""
    import torch

    lp, lengths, targets = data["log_probs"], data["lengths"], data["targets"]
    C = lp.shape[2]
    if name in ("ctc_loss", "ctc_loss_t2"):
        tl = torch.full((lp.shape[0],), targets.shape[1], dtype=torch.long)

        def run():
            x = lp.detach().requires_grad_(True)
            loss = torch.nn.functional.ctc_loss(x.transpose(0, 1), targets, lengths, tl, reduction="sum")
            loss.backward()
            return None
        return run
    sys.path.insert(0, common.ROOT)
    import fsalign

    topo = fsalign.CtcTopology(C)
    words = common.transcripts(targets)
    engine = {"chain": "auto", "k2": "k2"}[name]

    def run():
        x = lp.detach().requires_grad_(True)
        fsalign.full_sum_loss(x, lengths, topo.compile(words), engine=engine).sum().backward()
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker")
    ap.add_argument("--data")
    ap.add_argument("--out")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", nargs="+", default=common.SIZES)
    ap.add_argument("--methods", nargs="+", default=["chain", "ctc_loss", "ctc_loss_t2", "k2"])
    ap.add_argument("--bench-python", default=os.path.join(common.ROOT, ".bench-venv", "bin", "python"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--k2-timeout", type=float, default=300)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.worker:
        return common.worker(args.worker, args.data, args.out, args.calls, methods=_method)
    methods = [m for m in args.methods if m != "ctc_loss_t2" or os.path.exists(args.bench_python)]
    pythons = {m: sys.executable for m in methods}
    pythons["ctc_loss_t2"] = args.bench_python
    timeouts = {m: args.k2_timeout if m.startswith("k2") else args.timeout for m in methods}
    results, tmp = common.measure(methods, pythons, args.sizes, args.rounds, args.calls, timeouts, __file__)
    print(f"B={common.B}, 1 thread, full sum + backward, medians over {args.rounds} rounds (each a worker "
          f"process: median of {args.calls} calls after a warm-up); peak = VmHWM during the first full call "
          f"minus VmRSS before it; load average {os.getloadavg()[0]:.1f} at the end.\n")
    head = " | ".join(f"{m} ms" for m in methods) + " | " + " | ".join(f"{m} MiB" for m in methods)
    others = [m for m in methods if m != "chain"]
    print(f"| T | C | {head} | " + " | ".join(f"chain / {m} time | chain / {m} mem" for m in others) + " |")
    print("|---|---|" + "---|" * (2 * len(methods) + 2 * len(others)))
    for s in args.sizes:
        T, C = s.split("x")
        t = {m: common.med(results[s][m], "ms") for m in methods}
        mem = {m: common.med(results[s][m], "peak_mib") for m in methods}
        cells = [common.fmt(t[m]) for m in methods] + [common.fmt(mem[m]) for m in methods]
        for m in others:
            for d in (t, mem):
                cells.append("-" if d[m] is None or d["chain"] is None or not d[m] else f"{d['chain'] / d[m]:.2f}")
        print(f"| {T} | {C} | " + " | ".join(cells) + " |")
        for m in methods:
            errs = [r["error"] for r in results[s][m] if "error" in r]
            if errs:
                print(f"  {m} at {s}: {len(errs)}/{len(results[s][m])} runs failed: {errs[0]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results}, f, indent=1)


if __name__ == "__main__":
    main()
