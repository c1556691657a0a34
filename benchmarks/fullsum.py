"""Full-sum (forward+backward) and Viterbi with k2, against baselines, same process.

Grid: B=8, T in {200, 800}, S=T/4 tokens, C in {32, 512, 5000}; CTC and HMM
topologies. Baselines: torch.nn.functional.ctc_loss (CTC only) and a plain
vectorised PyTorch forward algorithm over the same graph arcs (autograd
backward). Also: graph compilation per batch, where k2's time goes
(intersection / total scores / backward), and the share of a training step of
a small Conformer encoder (the end-to-end goal: compile + loss <= 5 %).

Usage: python benchmarks/fullsum.py [--repeats 5] [--quick]
"""
import argparse
import statistics
import time

import torch

import fsalign
from fsalign.lattice import FULL_SUM_BEAM, dense_scores, intersect


def timeit(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def make_batch(B, T, S, C, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, C, generator=g)
    lengths = torch.tensor([T - 8 * i for i in range(B)])
    # 4-token words; token ids 1..C-1, with repeats
    transcripts = []
    for _ in range(B):
        toks = torch.randint(1, C, (S,), generator=g).tolist()
        transcripts.append([toks[i:i + 4] for i in range(0, S, 4)])
    return logits, lengths, transcripts


def torch_forward(scores, lengths, fsa):
    """Plain vectorised PyTorch forward algorithm over the graph arcs (log semiring).

    One loop over frames; every step handles the arcs of all utterances at once
    (scatter-logsumexp into destination states). Backward by autograd.
    """
    shape = fsa.arcs.shape()
    state_offsets = shape.row_splits(1).long()
    arc_src = shape.row_ids(2).long()  # global source state of every arc
    arc_utt = shape.row_ids(1).long()[arc_src]
    values = fsa.arcs.values()
    dst = values[:, 1].long() + state_offsets[arc_utt]
    lab = values[:, 2].long()
    emit = lab >= 0
    src_e, dst_e, lab_e, utt_e, sc_e = arc_src[emit], dst[emit], lab[emit], arc_utt[emit], fsa.scores[emit]
    n = int(state_offsets[-1])
    state_utt = shape.row_ids(1).long()
    alpha = torch.full((n,), float("-inf"))
    alpha[state_offsets[:-1]] = 0.0
    lengths = lengths.long()
    for t in range(int(lengths.max())):
        cand = alpha[src_e] + sc_e + scores[utt_e, t, lab_e]
        m = torch.full((n,), float("-inf")).scatter_reduce(0, dst_e, cand, "amax", include_self=True)
        m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        acc = torch.zeros(n).index_add(0, dst_e, torch.exp(cand - m_safe[dst_e]))
        new = torch.where(acc > 0, m_safe + torch.log(acc), torch.full_like(m, float("-inf")))
        alpha = torch.where(t < lengths[state_utt], new, alpha)
    fin = ~emit
    final = alpha[arc_src[fin]] + fsa.scores[fin]
    B = len(lengths)
    mx = torch.full((B,), float("-inf")).scatter_reduce(0, arc_utt[fin], final, "amax", include_self=True)
    return mx + torch.log(torch.zeros(B).index_add(0, arc_utt[fin], torch.exp(final - mx[arc_utt[fin]])))


def conformer_step_ms(B, T_out, repeats):
    import torchaudio

    d = 144
    enc = torchaudio.models.Conformer(input_dim=d, num_heads=4, ffn_dim=576, num_layers=4,
                                      depthwise_conv_kernel_size=31)
    x = torch.randn(B, T_out, d)
    lengths = torch.full((B,), T_out)

    def step():
        y, _ = enc(x, lengths)
        y.sum().backward()

    return timeit(step, repeats)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="T=200 only, no PyTorch-forward baseline at T=800")
    args = ap.parse_args()
    torch.set_num_threads(2)
    B = 8
    Ts = [200] if args.quick else [200, 800]
    rows = []
    for T in Ts:
        S = T // 4
        for C in (32, 512, 5000):
            logits, lengths, transcripts = make_batch(B, T, S, C)
            for name, topo in (("CTC", fsalign.CtcTopology(C)), ("HMM", fsalign.HmmTopology(C))):
                t_compile = timeit(lambda: topo.compile(transcripts), args.repeats)
                graphs = topo.compile(transcripts)

                def k2_fullsum():
                    x = logits.clone().requires_grad_()
                    fsalign.full_sum_loss(x.log_softmax(-1), lengths, graphs).sum().backward()

                def k2_viterbi():
                    fsalign.viterbi_align(logits.log_softmax(-1), lengths, graphs)

                def ctc_baseline():
                    x = logits.clone().requires_grad_()
                    targets = torch.tensor([[t for w in u for t in w] for u in transcripts])
                    torch.nn.functional.ctc_loss(
                        x.log_softmax(-1).transpose(0, 1), targets, lengths, torch.full((B,), S),
                        reduction="none").sum().backward()

                def torch_fwd():
                    x = logits.clone().requires_grad_()
                    torch_forward(x.log_softmax(-1), lengths, graphs.fsa).sum().backward()

                # where k2's time goes: intersection, then total scores (forward), then backward
                x = logits.log_softmax(-1).detach().requires_grad_()
                t_inter = timeit(lambda: intersect(x, lengths, graphs, 1.0, FULL_SUM_BEAM), args.repeats)
                t_fwd = timeit(lambda: intersect(x, lengths, graphs, 1.0, FULL_SUM_BEAM)
                               .lattice.get_tot_scores(True, True), args.repeats)
                inter = intersect(x, lengths, graphs, 1.0, FULL_SUM_BEAM)
                row = dict(topo=name, T=T, C=C, compile=t_compile, fullsum=timeit(k2_fullsum, args.repeats),
                           viterbi=timeit(k2_viterbi, args.repeats), intersect=t_inter, forward=t_fwd,
                           arcs=inter.lattice.num_arcs)
                row["ctc_loss"] = timeit(ctc_baseline, args.repeats) if name == "CTC" else None
                row["torch_fwd"] = timeit(torch_fwd, max(1, args.repeats // 2))
                rows.append(row)
                print(row, flush=True)
    print()
    print("| topo | T | C | compile | full-sum fwd+bwd | of which intersect / +tot scores | lattice arcs "
          "| Viterbi | ctc_loss fwd+bwd | k2 / ctc_loss | PyTorch fwd+bwd | k2 / PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for r in rows:
        ratio = "-" if r["ctc_loss"] is None else f"{r['fullsum'] / r['ctc_loss']:.2f}"
        ratio2 = "-" if r["torch_fwd"] is None else f"{r['fullsum'] / r['torch_fwd']:.3f}"
        print(f"| {r['topo']} | {r['T']} | {r['C']} | {r['compile']:.1f} | {r['fullsum']:.1f} | "
              f"{r['intersect']:.1f} / {r['forward']:.1f} | {r['arcs']} | {r['viterbi']:.1f} | "
              f"{fmt(r['ctc_loss'])} | {ratio} | {fmt(r['torch_fwd'])} | {ratio2} |")
    step = conformer_step_ms(B, 200, args.repeats)
    print(f"\nConformer (4 layers, d=144) forward+backward, B=8, 200 frames: {step:.1f} ms")
    for r in rows:
        if r["T"] == 200:
            share = 100.0 * (r["compile"] + r["fullsum"]) / (step + r["compile"] + r["fullsum"])
            print(f"  {r['topo']} C={r['C']}: compile + full-sum = {share:.1f} % of the training step")


if __name__ == "__main__":
    main()
