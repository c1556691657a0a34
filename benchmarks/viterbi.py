"""Viterbi: fsalign.viterbi_align (chain kernels; k2) vs torchaudio's forced_align, 1 thread.

Grid: B=8, (T, C) in {(800, 32), (800, 5000), (3000, 512)}, lengths T, T-8, ..., S = T/4 tokens
per utterance (4-token words, random ids 1..C-1, so repeats occur at small C), random logits,
log_softmax, float32; CTC topology (blank 0, no loop probabilities), as forced_align computes.

Method. Every measurement is its own worker process (OMP/MKL/NUMBA threads 1 and
torch.set_num_threads(1)) that loads the same inputs from disk (NumPy .npz), runs the method
once on a tiny input (imports, numba cache, k2 and torchaudio libraries), then once on the
batch for the peak memory: the peak resident size during that call minus the resident size just
before it (Linux: the peak is reset with /proc/self/clear_refs and read from VmHWM; elsewhere the
growth of ``ru_maxrss``), i.e. memory above the inputs and the loaded libraries, then ``--calls`` more times for the
time (the worker's median). Rounds are interleaved: each round runs every (size, method) once,
in a rotated order; the tables give medians over rounds. The chain row is
``fsalign.viterbi_align`` with the default engine (the chain kernels), the k2 row the same call
with ``engine="k2"``; both include compiling the transcripts (``topology.compile``) and building
the token and word spans of every path (Python objects), as forced_align takes the targets
directly; the kernel row is the chain kernel alone (``chain_from_topology`` + ``chain_viterbi`` +
``path_labels``: frame labels and best scores, what forced_align returns);
forced_align is called once per utterance, as its API requires.
Paths: forced_align accumulates in the input dtype (float32); each of its paths is re-scored in
float64 and compared with the chain's exact best score.

forced_align needs torchaudio >= 2.1 (the project's stack pins 0.13), so it runs in a second
virtual environment. On the project's CPU machines PyPI's torchaudio is a CUDA build whose
library needs torch's CUDA libraries, so the smallest working pair is a CUDA torch that pip
finds on the machine's disk plus torchaudio 2.11.0 (1.8 MB, torch-ABI-stable):

    python3.11 -m venv .bench-venv
    .bench-venv/bin/pip install torch==2.14.1 torchaudio==2.11.0 numpy

(about 5.5 GB in the venv, nothing large downloaded there; elsewhere pip downloads that CUDA
torch; torch 2.13.0+cpu with torchaudio 2.11.x fails to load libtorchaudio: libc10_cuda.so).

Usage: python benchmarks/viterbi.py [--rounds 5] [--calls 3] [--bench-python .bench-venv/bin/python]
       [--sizes 800x32 800x5000 3000x512] [--json out.json]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIZES = ["800x32", "800x5000", "3000x512"]
B = 8


def make_inputs(path: str, T: int, C: int, seed: int = 0) -> None:
    """Writes log_probs (B, T, C) float32, lengths (B,), targets (B, S) and words to ``path``."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((B, T, C), dtype=np.float32)
    m = logits.max(-1, keepdims=True)
    log_probs = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))  # log_softmax
    S = T // 4
    targets = rng.integers(1, C, size=(B, S))
    np.savez(path, log_probs=log_probs.astype(np.float32), lengths=np.array([T - 8 * i for i in range(B)]),
             targets=targets, S=S)


def transcripts(targets):
    """4-token words of every utterance's targets."""
    return [[t[i:i + 4] for i in range(0, len(t), 4)] for t in targets.tolist()]


def _method(name, data):
    """A zero-argument callable running method ``name`` on ``data`` (a dict of torch/NumPy inputs)."""
    import torch

    lp, lengths, targets = data["log_probs"], data["lengths"], data["targets"]
    C = lp.shape[2]
    if name == "forced_align":
        import torchaudio.functional as F

        tg = targets.to(torch.int32)

        def run():
            out = torch.full(lp.shape[:2], -1, dtype=torch.int64)
            for b in range(lp.shape[0]):
                L = int(lengths[b])
                out[b, :L] = F.forced_align(lp[b:b + 1, :L], tg[b:b + 1], blank=0)[0][0].long()
            return out
        return run
    sys.path.insert(0, ROOT)
    import fsalign

    topo = fsalign.CtcTopology(C)
    words = transcripts(targets)
    if name == "kernel":
        from fsalign.engine.chain import chain_from_topology, chain_viterbi, path_labels

        def run():
            chain = chain_from_topology(topo, words)
            best, states = chain_viterbi(lp, lengths, chain)
            return path_labels(states, chain), best
        return run
    engine = {"chain": "auto", "k2": "k2"}[name]

    def run():
        alis = fsalign.viterbi_align(lp, lengths, topo.compile(words), engine=engine)
        out = torch.full(lp.shape[:2], -1, dtype=torch.int64)
        for b, a in enumerate(alis):
            out[b, :a.num_frames] = a.labels
        return out, torch.tensor([a.score for a in alis], dtype=torch.float64)
    return run


def _load(path):
    import torch

    z = np.load(path)
    return {"log_probs": torch.from_numpy(z["log_probs"]), "lengths": torch.from_numpy(z["lengths"]),
            "targets": torch.from_numpy(z["targets"])}


def _tiny(data):
    """A small batch of the same kind (warm-up)."""
    return {"log_probs": data["log_probs"][:2, :40].contiguous(), "lengths": data["lengths"][:2].clamp(max=40),
            "targets": data["targets"][:2, :8]}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak() -> int:
    """Resets the peak resident size to the current one (Linux clear_refs); returns the baseline, KiB.

    Without /proc (or without the right to write clear_refs) the baseline is ``ru_maxrss``.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak() -> int:
    """Peak resident size since :func:`_reset_peak`, KiB."""
    try:
        return _status_kib("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(name: str, data_path: str, out_path: str, calls: int, methods=None) -> None:
    """Runs one measurement (see the module docstring) and writes its JSON (and paths) next to ``out_path``.

    ``methods(name, data)`` makes the callable (default: this script's Viterbi methods).
    """
    import torch

    torch.set_num_threads(1)
    methods = methods or _method
    data = _load(data_path)
    methods(name, _tiny(data))()
    fn = methods(name, data)
    rss0 = _reset_peak()
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    rss1 = _peak()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    if isinstance(result, tuple) and isinstance(result[0], torch.Tensor):
        np.save(out_path + ".paths.npy", result[0].numpy())
        np.save(out_path + ".best.npy", result[1].detach().numpy())
    elif isinstance(result, torch.Tensor):
        np.save(out_path + ".paths.npy", result.numpy())
    with open(out_path, "w") as f:
        json.dump({"ms": 1000 * statistics.median(times) if times else 1000 * first, "first_ms": 1000 * first,
                   "peak_mib": (rss1 - rss0) / 1024.0, "rss_before_mib": rss0 / 1024.0,
                   "torch": torch.__version__}, f)


def run_worker(python: str, script: str, name: str, data_path: str, out_path: str, calls: int, timeout: float,
               extra_args=()):
    """Runs a worker process; returns its JSON dict, or {"error": ...} (timeouts included)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [python, script, "--worker", name, "--data", data_path, "--out", out_path, "--calls", str(calls),
           *extra_args]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result in {timeout:.0f} s", "timeout": True}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]}
    with open(out_path) as f:
        return json.load(f)


def measure(methods, pythons, sizes, rounds, calls, timeout, script, extra_args=()):
    """Interleaved rounds of every (size, method); returns {size: {method: [results]}} and the data dir.

    ``timeout``: seconds per worker, or a dict by method; a (size, method) that timed out once
    is not run again.
    """
    tmp = tempfile.mkdtemp(prefix="fsalign-bench-")
    results = {s: {m: [] for m in methods} for s in sizes}
    for s in sizes:
        T, C = map(int, s.split("x"))
        make_inputs(os.path.join(tmp, f"{s}.npz"), T, C)
    for r in range(rounds):
        for i, s in enumerate(sizes):
            order = methods[(r + i) % len(methods):] + methods[:(r + i) % len(methods)]
            for m in order:
                if any(x.get("timeout") for x in results[s][m]):
                    continue
                out = os.path.join(tmp, f"{s}.{m}.{r}.json")
                limit = timeout[m] if isinstance(timeout, dict) else timeout
                res = run_worker(pythons[m], script, m, os.path.join(tmp, f"{s}.npz"), out, calls, limit, extra_args)
                res["out"] = out
                results[s][m].append(res)
                print(f"round {r} {s} {m}: " + (res.get("error") or f"{res['ms']:.1f} ms, {res['peak_mib']:.1f} MiB"),
                      file=sys.stderr, flush=True)
    return results, tmp


def med(results, key):
    vals = [r[key] for r in results if "error" not in r]
    return statistics.median(vals) if vals else None


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def path_check(tmp, size, results):
    """(utterances where forced_align's path scores below the exact best, worst gap, paths equal to the chain's)."""
    z = np.load(os.path.join(tmp, f"{size}.npz"))
    lp = z["log_probs"].astype(np.float64)
    fa = [r for r in results["forced_align"] if "error" not in r]
    ch = [r for r in results["chain"] if "error" not in r]
    if not fa or not ch:
        return None
    fa_paths = np.load(fa[0]["out"] + ".paths.npy")
    ch_paths, best = np.load(ch[0]["out"] + ".paths.npy"), np.load(ch[0]["out"] + ".best.npy")
    lower, gap, same = 0, 0.0, 0
    for b in range(lp.shape[0]):
        L = int(z["lengths"][b])
        score = lp[b, np.arange(L), fa_paths[b, :L]].sum()
        d = best[b] - score
        lower += d > 1e-9 * abs(best[b])
        gap = max(gap, d)
        same += bool((fa_paths[b, :L] == ch_paths[b, :L]).all())
    return lower, gap, same


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker")
    ap.add_argument("--data")
    ap.add_argument("--out")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", nargs="+", default=SIZES)
    ap.add_argument("--bench-python", default=os.path.join(ROOT, ".bench-venv", "bin", "python"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.data, args.out, args.calls)
    methods = ["chain", "kernel", "k2", "forced_align"]
    pythons = {"chain": sys.executable, "kernel": sys.executable, "k2": sys.executable,
               "forced_align": args.bench_python}
    results, tmp = measure(methods, pythons, args.sizes, args.rounds, args.calls, args.timeout, __file__)
    print(f"B={B}, 1 thread, medians over {args.rounds} rounds (each a worker process: median of {args.calls} "
          f"calls after a warm-up); peak = VmHWM during the first full call minus VmRSS before it; load average "
          f"{os.getloadavg()[0]:.1f} at the end.\n")
    print("| T | C | chain ms | kernel ms | k2 ms | forced_align ms | chain / fa | kernel / fa | chain / k2 | "
          "chain MiB | kernel MiB | k2 MiB | fa MiB | chain / fa mem | kernel / fa mem | "
          "fa paths below best (max gap) | fa path = chain path |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in args.sizes:
        T, C = s.split("x")
        t = {m: med(results[s][m], "ms") for m in methods}
        mem = {m: med(results[s][m], "peak_mib") for m in methods}
        ratio = lambda a, b: None if a is None or b is None or b == 0 else a / b  # noqa: E731
        chk = path_check(tmp, s, results[s])
        chk_txt = "-" if chk is None else f"{chk[0]}/{B} ({chk[1]:.2g})"
        same_txt = "-" if chk is None else f"{chk[2]}/{B}"
        errors = {m: results[s][m][0]["error"] for m in methods if t[m] is None and results[s][m]}
        print(f"| {T} | {C} | {fmt(t['chain'])} | {fmt(t['kernel'])} | {fmt(t['k2'])} | {fmt(t['forced_align'])} | "
              f"{fmt(ratio(t['chain'], t['forced_align']), 2)} | {fmt(ratio(t['kernel'], t['forced_align']), 2)} | "
              f"{fmt(ratio(t['chain'], t['k2']), 3)} | {fmt(mem['chain'])} | {fmt(mem['kernel'])} | "
              f"{fmt(mem['k2'])} | {fmt(mem['forced_align'])} | {fmt(ratio(mem['chain'], mem['forced_align']), 2)} | "
              f"{fmt(ratio(mem['kernel'], mem['forced_align']), 2)} | {chk_txt} | {same_txt} |")
        for m, e in errors.items():
            print(f"  {m} at {s}: {e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results}, f, indent=1)


if __name__ == "__main__":
    main()
