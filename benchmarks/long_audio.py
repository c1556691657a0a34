"""Long recordings: one recording with one transcript of 10, 30, 60 minutes, against aligning its utterances one by one.

Data: the shipped utterances of ``--part`` (``data/LibriSpeech``), cycled in file order until
the recording is ``--minutes`` long, written as one 16 kHz FLAC with one transcript (their
transcripts joined); the reference word times are ``data/alignments/<part>.words.ctm`` shifted by
each utterance's offset. Rows:

* ``long``: ``fsalign align --checkpoint CKPT`` on a manifest of that one cut (features computed
  on the fly, windowed encoder, checkpointed Viterbi: all defaults) in a subprocess with one
  thread (``OMP_NUM_THREADS=1``): wall time and peak RSS (``/usr/bin/time -f %M``) of the
  command, and the TSE (boundary, ms) of its word times against the shifted reference;
* ``pieces``: the same utterances aligned one by one (``fsalign align`` on a manifest of the
  distinct utterances, same checkpoint and defaults), each utterance's word times shifted by its
  offsets in the recording, TSE against the same reference over the same words. ``TSE ratio`` =
  long / pieces.

``--encoder`` also measures the windowed encoder against the whole forward on the first
``--encoder-minutes`` of the recording (global attention fits there): max |Δ log p|, the share of
frames whose best column changes, and the change of the Viterbi word times (mean and max, ms).
``--kernel T,S`` times the chain Viterbi alone (numba, one thread) at T frames and an HMM chain
of S states in a subprocess: wall time and peak RSS, ordinary (if it fits) and checkpointed.

Usage: python benchmarks/long_audio.py --checkpoint CKPT [--minutes 10 30 60] [--part dev-clean-2]
       [--work DIR] [--encoder] [--kernel 90000,80000] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _utterances(part):
    out = []
    for trans in sorted((REPO / "data" / "LibriSpeech" / part).glob("*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            out.append((utt, text, trans.parent / f"{utt}.flac"))
    return out


def _reference(part):
    words = {}
    for line in (REPO / "data" / "alignments" / f"{part}.words.ctm").read_text().splitlines():
        utt, _, start, duration, word = line.split()[:5]
        words.setdefault(utt, []).append((word, float(start), float(start) + float(duration)))
    return words


def build(part, minutes, work: Path):
    """Writes the long FLAC and two manifests; returns (long manifest, pieces manifest, [(utt, offset)])."""
    import soundfile as sf
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    utts = _utterances(part)
    flac = work / f"long_{minutes:g}min.flac"
    audio, plan, total, k = [], [], 0, 0
    while total < minutes * 60 * 16000:
        utt, text, path = utts[k % len(utts)]
        samples, rate = sf.read(path, dtype="int16")
        assert rate == 16000
        plan.append((utt, text, total / 16000))
        audio.append(samples)
        total += len(samples)
        k += 1
    if not flac.is_file():
        sf.write(flac, np.concatenate(audio), 16000)
    rec = Recording.from_file(flac, recording_id=flac.stem)
    long = MonoCut(flac.stem, 0.0, rec.duration, 0, recording=rec, supervisions=[SupervisionSegment(
        flac.stem, flac.stem, 0.0, rec.duration, channel=0, text=" ".join(t for _, t, _ in plan))])
    long_path = work / f"long_{minutes:g}min.jsonl.gz"
    CutSet.from_cuts([long]).to_file(long_path)
    distinct = {}
    for utt, text, path in utts[:min(k, len(utts))]:
        r = Recording.from_file(path, recording_id=utt)
        distinct[utt] = MonoCut(utt, 0.0, r.duration, 0, recording=r, supervisions=[SupervisionSegment(
            utt, utt, 0.0, r.duration, channel=0, text=text)])
    pieces_path = work / f"pieces_{minutes:g}min.jsonl.gz"
    CutSet.from_cuts(distinct.values()).to_file(pieces_path)
    return long_path, pieces_path, [(u, o) for u, _, o in plan], flac.stem


def run_align(checkpoint, cuts, output):
    """``fsalign align`` in a subprocess, one thread: (wall seconds, peak RSS MiB)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    rss_file = output.with_suffix(".rss")
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), sys.executable, "-m", "fsalign.cli", "align",
           "--checkpoint", str(checkpoint), "--cuts", str(cuts), "--output", str(output), "--no-progress",
           "--device", "cpu", "--restart"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"fsalign align failed:\n{proc.stderr[-3000:]}")
    return wall, int(rss_file.read_text().split()[-1]) / 1024


def _ctm(path):
    from fsalign.results.formats import read_ctm

    return {u: [(w.label, w.start, w.end) for w in ws] for u, ws in read_ctm(path).items()}


def _tse(ref, hyp):
    from fsalign.results.metrics import time_stamp_error

    assert [w for w, _, _ in ref] == [w.upper() for w, _, _ in hyp] or [w for w, _, _ in ref] == [w for w, _, _ in hyp]
    return 1000 * time_stamp_error([[r[1:] for r in ref]], [[h[1:] for h in hyp]]).boundary


def measure(args, minutes, work):
    long_path, pieces_path, plan, long_id = build(args.part, minutes, work)
    ref_words = _reference(args.part)
    reference = [(w, s + off, e + off) for utt, off in plan for w, s, e in ref_words[utt]]
    wall, rss = run_align(args.checkpoint, long_path, work / f"long_{minutes:g}min.ctm")
    long_words = _ctm(work / f"long_{minutes:g}min.ctm")[long_id]
    p_wall, p_rss = run_align(args.checkpoint, pieces_path, work / f"pieces_{minutes:g}min.ctm")
    pieces = _ctm(work / f"pieces_{minutes:g}min.ctm")
    shifted = [(w, s + off, e + off) for utt, off in plan for w, s, e in pieces[utt]]
    row = {"minutes": minutes, "words": len(reference), "long_wall_s": round(wall, 1), "long_peak_rss_mib": round(rss),
           "pieces_wall_s": round(p_wall, 1), "pieces_peak_rss_mib": round(p_rss),
           "long_tse_ms": round(_tse(reference, long_words), 2), "pieces_tse_ms": round(_tse(reference, shifted), 2)}
    row["tse_ratio"] = round(row["long_tse_ms"] / row["pieces_tse_ms"], 3)
    return row


def encoder(args, work):
    """Windowed against whole forward on the first --encoder-minutes of the recording."""
    import torch
    from lhotse import CutSet

    import fsalign
    from fsalign.checkpoint import load_checkpoint
    from fsalign.corpus.cuts import CutDataset
    from fsalign.util import LongAudio

    torch.set_num_threads(1)
    long_path, _, _, _ = build(args.part, args.encoder_minutes, work)
    loaded = load_checkpoint(args.checkpoint, "cpu")
    model = loaded.model.eval()
    batch = CutDataset(loaded.tokenizer, on_error="raise")[CutSet.from_file(long_path)]
    with torch.no_grad():
        whole, lengths = model.log_probs(batch.features, batch.feature_lengths)
    rows = []
    topo = loaded.topology
    graphs = topo.compile(batch.transcripts)
    ref = fsalign.viterbi_align(whole, lengths, graphs)[0]
    step = loaded.metadata.get("frame_shift_s", 0.01) * model.subsampling
    for window_s, context_s in args.windows:
        windows = LongAudio(window_s=window_s, context_s=context_s)
        got, got_lengths = model.windowed_log_probs(batch.features, batch.feature_lengths, windows)
        assert torch.equal(got_lengths, lengths)
        ali = fsalign.viterbi_align(got, lengths, graphs)[0]
        shifts = np.array([[abs(a.start - b.start), abs(a.end - b.end)] for a, b in zip(ali.words, ref.words)]) * step
        rows.append({"window_s": window_s, "context_s": context_s, "minutes": args.encoder_minutes,
                     "max_abs_dlogp": round(float((got - whole).abs().max()), 4),
                     "argmax_changed": round(float((got.argmax(-1) != whole.argmax(-1)).float().mean()), 5),
                     "word_time_change_mean_ms": round(1000 * float(shifts.mean()), 3),
                     "word_time_change_max_ms": round(1000 * float(shifts.max()), 1),
                     "words_moved": int((shifts.max(1) > 0).sum()), "words": len(ref.words)})
    return rows


KERNEL = """
import resource, sys, time, torch
torch.set_num_threads(1)
import fsalign
from fsalign.engine.chain import chain_from_topology, chain_viterbi
T, S, C, budget = int(sys.argv[1]), int(sys.argv[2]), 72, int(sys.argv[3])
g = torch.Generator().manual_seed(0)
words = [torch.randint(1, C, (4,), generator=g).tolist() for _ in range((S - 1) // 5)]
chain = chain_from_topology(fsalign.HmmTopology(C, silence=0), [words])
scores = torch.randn(1, T, C, generator=g).log_softmax(-1)
chain_viterbi(scores[:, :50], [50], chain_from_topology(fsalign.HmmTopology(C, silence=0), [words[:5]]))  # compile
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
chain_viterbi(scores, [T], chain, memory_budget=budget)
print(time.perf_counter() - start, before / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      int(chain.num_states[0]))
"""


def kernel(T, S):
    rows = []
    for name, budget in (("ordinary", 1 << 62), ("checkpointed", 0)):
        if name == "ordinary" and T * S > 6 << 30:
            rows.append({"kind": name, "T": T, "note": f"needs {T * S / 2**30:.1f} GiB of backpointers: not run"})
            continue
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-c", KERNEL, str(T), str(S), str(budget)], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        wall, before, peak, states = float(out[0]), float(out[1]), float(out[2]), int(out[3])
        rows.append({"kind": name, "T": T, "states": states, "wall_s": round(wall, 1),
                     "peak_rss_mib": round(peak), "rss_before_mib": round(before)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--minutes", type=float, nargs="*", default=[10, 30, 60])
    parser.add_argument("--part", default="dev-clean-2")
    parser.add_argument("--work", type=Path, default=Path("exp/bench_long_audio"))
    parser.add_argument("--encoder", action="store_true")
    parser.add_argument("--encoder-minutes", type=float, default=2.0)
    parser.add_argument("--windows", type=lambda s: tuple(float(x) for x in s.split(",")), nargs="*",
                        default=[(30.0, 5.0), (30.0, 2.0), (20.0, 5.0), (60.0, 10.0)])
    parser.add_argument("--kernel", type=lambda s: tuple(int(x) for x in s.split(",")), default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    out = {}
    if args.kernel:
        out["kernel"] = kernel(*args.kernel)
        print(json.dumps(out["kernel"]), flush=True)
    if args.encoder:
        out["encoder"] = encoder(args, args.work)
        print(json.dumps(out["encoder"]), flush=True)
    out["long"] = []
    for minutes in args.minutes:
        out["long"].append(measure(args, minutes, args.work))
        print(json.dumps(out["long"][-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
