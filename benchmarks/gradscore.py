"""GradScore alignment (section 5) against posterior Viterbi alignment of the same model, same process.

Model: the recipe's ``ConformerModel`` (``--preset``: ``tiny``, the CPU recipe's default, 0.18 M
parameters, or ``small``, 2 M; conv subsampling x4, per-utterance CMVN, softmax CTC head),
C = 257 columns, 80-dim input features, random weights, eval mode, float32.
Batch: B utterances of ``--seconds`` seconds (10 ms frames), S labels each, for
S in {20, 60, 150}. Every timing includes the encoder forward:

* posterior: encoder forward (no grad) + log_softmax + CtcTopology.compile + viterbi_align;
* GradScore batched: gradient_scores(batched=True) (one vmapped VJP) + grad_align;
* GradScore loop: gradient_scores(batched=False) (one VJP per label index) + grad_align;
* floor: what any G costs at least, one encoder forward with autograd plus S encoder
  vector-Jacobian products to the input (each timed as one forward + VJP less the forward).

Prints medians (ms per second of audio), the ratio to posterior alignment and G's ratio to the floor.
Usage: python benchmarks/gradscore.py [--preset tiny] [--repeats 3] [--batch 2] [--seconds 10] [--labels 20 60 150]
       [--threads N] [--chunk-size K] [--loop-max-labels N] [--quick]
"""
import argparse
import statistics
import time

import torch
from timing import median_seconds

import fsalign
from fsalign.models.conformer import PRESETS, ConformerConfig, ConformerModel
from fsalign.scores.gradient import gradient_scores
from fsalign.scores.gradscore import grad_align


def timeit(fn, repeats):
    return median_seconds(fn, repeats)


def make_batch(B, frames, S, C, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(B, frames, 80, generator=g)
    lengths = torch.tensor([frames - 40 * b for b in range(B)])
    transcripts = []
    for _ in range(B):
        toks = [int(torch.randint(1, C, (1,), generator=g))]
        while len(toks) < S:  # no equal neighbours: CTC needs S frames only
            t = int(torch.randint(1, C, (1,), generator=g))
            if t != toks[-1]:
                toks.append(t)
        transcripts.append([toks[i:i + 4] for i in range(0, S, 4)])  # 4-token words
    return features, lengths, transcripts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--labels", type=int, nargs="+", default=[20, 60, 150])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--loop-max-labels", type=int, default=1000, help="time the per-label loop only up to this S")
    ap.add_argument("--quick", action="store_true", help="1 repeat, 4 s, S in {20, 60}")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.seconds, args.labels = 1, 4.0, [20, 60]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    C = 257
    model = ConformerModel(ConformerConfig.from_preset(args.preset, C, spec_augment=False, dropout=0.0)).eval()
    frames = int(args.seconds * 100)
    audio_s = None
    print(f"preset {args.preset} ({model.num_params / 1e6:.2f} M parameters), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={args.batch}, {args.seconds:g} s "
          f"per utterance, chunk_size={args.chunk_size}")
    print("| S | posterior [ms/s] | GradScore batched [ms/s] | ratio | G only [ms/s] | align only [ms/s] "
          "| GradScore loop [ms/s] | ratio | floor [ms/s] | G / floor |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    topo = fsalign.CtcTopology(C, blank=0)
    for S in args.labels:
        features, lengths, transcripts = make_batch(args.batch, frames, S, C)
        audio_s = float(lengths.sum()) / 100.0

        def posterior():
            with torch.no_grad():
                h, hl = model.forward_encoder(features, lengths)
                log_probs = model.ctc_log_probs(model.ctc_logits(h))
            return fsalign.viterbi_align(log_probs, hl, topo.compile(transcripts))

        parts = {"G": [], "align": []}

        def grad_batched():
            t0 = time.perf_counter()
            G = gradient_scores(model, features, lengths, transcripts, chunk_size=args.chunk_size)
            t1 = time.perf_counter()
            alignments = grad_align(G, lengths, transcripts)
            parts["G"].append(t1 - t0)
            parts["align"].append(time.perf_counter() - t1)
            return alignments

        def grad_loop():
            return grad_align(gradient_scores(model, features, lengths, transcripts, batched=False), lengths,
                              transcripts)

        def encoder_forward():
            x = features.clone().requires_grad_(True)
            return x, model.forward_encoder(x, lengths)[0]

        cotangent = torch.randn(encoder_forward()[1].shape)

        def encoder_vjp():
            x, h = encoder_forward()
            return torch.autograd.grad(h, x, grad_outputs=cotangent)

        t_forward = timeit(encoder_forward, args.repeats)
        floor = t_forward + S * max(timeit(encoder_vjp, args.repeats) - t_forward, 0.0)
        t_post = timeit(posterior, args.repeats)
        t_batched = timeit(grad_batched, args.repeats)
        t_g = statistics.median(parts["G"][1:])  # without the warm-up
        t_align = statistics.median(parts["align"][1:])
        t_loop = timeit(grad_loop, args.repeats) if S <= args.loop_max_labels else float("nan")
        per_s = 1000.0 / audio_s
        print(f"| {S} | {t_post * per_s:.1f} | {t_batched * per_s:.1f} | {t_batched / t_post:.1f} | "
              f"{t_g * per_s:.1f} | {t_align * per_s:.1f} | {t_loop * per_s:.1f} | {t_loop / t_post:.1f} | "
              f"{floor * per_s:.1f} | {t_g / floor:.2f} |", flush=True)


if __name__ == "__main__":
    main()
