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
    """Plain PyTorch forward algorithm over the graph arcs (log semiring), autograd-able."""
    B = scores.shape[0]
    totals = []
    for b in range(B):
        g = fsa[b]
        arcs = g.arcs.values()
        src, dst, lab = arcs[:, 0].long(), arcs[:, 1].long(), arcs[:, 2].long()
        arc_score = g.scores
        n = int(dst.max()) + 1
        emit_mask = lab >= 0
        s_src, s_dst, s_lab, s_sc = src[emit_mask], dst[emit_mask], lab[emit_mask], arc_score[emit_mask]
        alpha = torch.full((n,), float("-inf"))
        alpha[0] = 0.0
        for t in range(int(lengths[b])):
            cand = alpha[s_src] + s_sc + scores[b, t, s_lab]
            m = torch.full((n,), float("-inf")).scatter_reduce(0, s_dst, cand, "amax", include_self=True)
            m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            acc = torch.zeros(n).index_add(0, s_dst, torch.exp(cand - m_safe[s_dst]))
            alpha = torch.where(acc > 0, m_safe + torch.log(acc), torch.full_like(m, float("-inf")))
        fin = ~emit_mask
        totals.append(torch.logsumexp(alpha[src[fin]] + arc_score[fin], 0))
    return torch.stack(totals)


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

                # where k2's time goes
                x = logits.log_softmax(-1).detach().requires_grad_()
                t_inter = timeit(lambda: intersect(x, lengths, graphs, 1.0, FULL_SUM_BEAM), args.repeats)
                inter = intersect(x, lengths, graphs, 1.0, FULL_SUM_BEAM)
                t_tot = timeit(lambda: inter.lattice.get_tot_scores(True, True), args.repeats)
                row = dict(topo=name, T=T, C=C, compile=t_compile, fullsum=timeit(k2_fullsum, args.repeats),
                           viterbi=timeit(k2_viterbi, args.repeats), intersect=t_inter, tot=t_tot,
                           arcs=inter.lattice.num_arcs)
                row["ctc_loss"] = timeit(ctc_baseline, args.repeats) if name == "CTC" else None
                row["torch_fwd"] = (timeit(torch_fwd, 1) if (T == 200 and C != 5000) else None)
                rows.append(row)
                print(row, flush=True)
    print()
    print("| topo | T | C | compile ms | full-sum fwd+bwd ms | (intersect / tot) ms | lattice arcs | Viterbi ms "
          "| ctc_loss ms | k2 / ctc_loss | PyTorch forward ms | k2 / PyTorch fwd |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['fullsum'] / r['ctc_loss']:.2f}" if r["ctc_loss"] else "-"
        ratio2 = f"{r['fullsum'] / r['torch_fwd']:.2f}" if r["torch_fwd"] else "-"
        print(f"| {r['topo']} | {r['T']} | {r['C']} | {r['compile']:.1f} | {r['fullsum']:.1f} | "
              f"{r['intersect']:.1f} / {r['tot']:.1f} | {r['arcs']} | {r['viterbi']:.1f} | "
              f"{r['ctc_loss']:.1f} | {ratio} | " .replace("| None", "| -") if r["ctc_loss"] else
              f"| {r['topo']} | {r['T']} | {r['C']} | {r['compile']:.1f} | {r['fullsum']:.1f} | "
              f"{r['intersect']:.1f} / {r['tot']:.1f} | {r['arcs']} | {r['viterbi']:.1f} | - | - | ", end="")
        print(f"{r['torch_fwd']:.1f} | {ratio2} |" if r["torch_fwd"] else "- | - |")
    step = conformer_step_ms(B, 200, args.repeats)
    print(f"\nConformer (4 layers, d=144) forward+backward, B=8, 200 frames: {step:.1f} ms")
    for r in rows:
        if r["T"] == 200:
            share = 100.0 * (r["compile"] + r["fullsum"]) / (step + r["compile"] + r["fullsum"])
            print(f"  {r['topo']} C={r['C']}: compile + full-sum = {share:.1f} % of the training step")


if __name__ == "__main__":
    main()
