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

import torch
from timing import median_seconds

import fsalign
from fsalign.engine.lattice import FULL_SUM_BEAM, intersect


def timeit(fn, repeats):
    """Median milliseconds."""
    return median_seconds(fn, repeats) * 1000.0


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


def linear_tables(fsa, B):
    """Per-utterance (B, N) tables of a graph whose moves go 0, 1 or 2 states ahead.

    The built-in graphs are such chains (state j + 1 of the graph = expanded
    state j); returns the emitted column, the initial and final scores, and the
    score of entering each state by a loop, from the previous and from the one
    before (-inf where there is no such arc).
    """
    shape = fsa.arcs.shape()
    arc_src_global = shape.row_ids(2).long()
    arc_utt = shape.row_ids(1).long()[arc_src_global]
    v = fsa.arcs.values().long()
    src, dst, lab, sc = v[:, 0], v[:, 1], v[:, 2], fsa.scores
    N = int(shape.row_splits(1).diff().max()) - 2
    ninf = float("-inf")
    label = torch.zeros(B, N, dtype=torch.long)
    init, final = torch.full((B, N), ninf), torch.full((B, N), ninf)
    w = torch.full((3, B, N), ninf)
    e = lab >= 0
    label[arc_utt[e], dst[e] - 1] = lab[e]
    start = e & (src == 0)
    init[arc_utt[start], dst[start] - 1] = sc[start]
    mid = e & (src > 0)
    step = dst[mid] - src[mid]
    if not bool(((step >= 0) & (step <= 2)).all()):
        raise ValueError("not a chain graph")
    w[step, arc_utt[mid], dst[mid] - 1] = sc[mid]
    final[arc_utt[~e], src[~e] - 1] = sc[~e]
    return label, init, final, w


def torch_forward(scores, lengths, fsa):
    """Plain vectorised PyTorch forward algorithm over the same graph (log semiring).

    alpha is (B, N); each frame combines stay / +1 / +2 moves with two shifts and
    a logsumexp, the textbook CTC recursion generalised to the graph's scores.
    Backward by autograd.
    """
    B = scores.shape[0]
    label, init, final, w = linear_tables(fsa, B)
    emit = scores.gather(2, label[:, None, :].expand(B, scores.shape[1], label.shape[1]))  # (B, T, N)
    ninf = torch.full((B, 1), float("-inf"))
    emit = emit.unbind(1)  # emit[:, t] in the loop would make the backward O(T^2)
    alpha = init + emit[0]
    for t in range(1, int(lengths.max())):
        prev1 = torch.cat([ninf, alpha[:, :-1]], 1)
        prev2 = torch.cat([ninf, ninf, alpha[:, :-2]], 1)
        a, b, c = alpha + w[0], prev1 + w[1], prev2 + w[2]
        m = torch.maximum(torch.maximum(a, b), c).detach()
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # torch.logsumexp is slow on CPU
        total = torch.exp(a - m) + torch.exp(b - m) + torch.exp(c - m)
        reached = total > 0  # log(0) would give NaN gradients through the unreached states
        new = torch.where(reached, m + torch.log(torch.where(reached, total, torch.ones_like(total))),
                          torch.full_like(total, float("-inf"))) + emit[t]
        alpha = torch.where((t < lengths)[:, None], new, alpha)
    return torch.logsumexp(alpha + final, 1)  # once per batch


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
