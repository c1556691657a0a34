"""The one training loop recipes share: full-sum criteria on a Conformer, from lhotse cuts.

Criterion (eq. 5-6): ``topology`` ctc | hmm | relaxed, posterior scale α, prior scale β with
a prior mode (none | static | seq | batch | running, stop-grad), transition scale γ,
normalized gradient (eq. 11), blank-separated output (eq. 15-17), auxiliary AED loss.
An HMM starts with a warm-up stage (``--warmup``): by default the first third of the epochs
train the HMM itself with a sequence prior (α=0.5, γ=0.2, β=0.3), which keeps it out of the
all-silence state full-sum training from scratch falls into; then α=0.7, γ=0.3 without a
prior. ``--warmup ctc`` trains plain CTC on the same output layer first instead (column 0 is
CTC's blank and the HMM's silence). See docs/training.md for why and what was measured.

Optimizer: AdamW with the one-cycle schedule of A.4.5/A.4.6 (:func:`one_cycle_lr`).
Checkpoints: ``EXP/last.pt`` every epoch, ``EXP/best.pt`` by dev loss (of the last
stage), both written atomically; ``--resume`` continues from ``EXP/last.pt`` exactly
(model, optimizer, schedule position, RNG states; the sampler order is a function of
seed and epoch). DDP under torchrun: lhotse's samplers shard by rank; only rank 0 writes.

Dimension symbols:
  B: batch size.  T': feature frames.  T: encoder frames.  C: output columns.
"""
import argparse
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from fsalign.checkpoint import (
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from fsalign.corpus.cuts import FRAME_SHIFT_S, make_dataloader
from fsalign.corpus.tokenizers import Tokenizer
from fsalign.engine.builtin import TOPOLOGIES, make_topology
from fsalign.engine.fullsum import full_sum_loss
from fsalign.models.conformer import PRESETS, ConformerConfig, ConformerModel
from fsalign.scores.normgrad import normed_grad_log_softmax
from fsalign.scores.prefix import transcript_targets
from fsalign.scores.priors import (
    CorpusPrior,
    RunningPrior,
    batch_log_prior,
    prior_from_transcripts,
    sequence_log_prior,
)
from fsalign.training.evaluation import evaluate

__all__ = ["add_arguments", "one_cycle_lr", "train", "topology_params", "criterion_scales"]

logger = logging.getLogger(__name__)
PRIOR_MODES = ("none", "static", "seq", "batch", "running")
WARMUPS = ("prior", "ctc", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the model, criterion, optimizer, data and run argument groups (icefall style)."""
    g = parser.add_argument_group("model")
    g.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="encoder size (default: tiny, the CPU recipe; the paper's encoder is large)")
    g.add_argument("--subsampling", type=int, choices=(4, 6), default=4)
    g.add_argument("--dropout", type=float, default=0.1)
    g.add_argument("--blank-sep", action="store_true", help="blank-separated output head (eq. 15-17)")
    g.add_argument("--aed-layers", type=int, default=0, help="auxiliary AED decoder layers (0: none)")
    g.add_argument("--spec-augment", action=argparse.BooleanOptionalAction, default=False,
                   help="SpecAugment (default: off, for the shipped 20-minute corpus; on for real corpora)")
    g = parser.add_argument_group("criterion")
    g.add_argument("--topology", choices=TOPOLOGIES, default="ctc")
    g.add_argument("--posterior-scale", type=float, default=None, help="alpha (default: hmm 0.7, else 1.0)")
    g.add_argument("--prior-scale", type=float, default=0.0, help="beta")
    g.add_argument("--prior", choices=PRIOR_MODES, default="none", help="prior used with beta")
    g.add_argument("--prior-grad", action="store_true", help="let gradients flow through seq/batch priors")
    g.add_argument("--transition-scale", type=float, default=None, help="gamma (default: hmm 0.3, else 1.0)")
    g.add_argument("--label-loop", type=float, default=None, help="token self-loop prob. (hmm default 0.5)")
    g.add_argument("--silence-loop", type=float, default=None, help="silence/blank loop prob. (hmm default 0.96)")
    g.add_argument("--normed-grad", action="store_true", help="normalized gradient (eq. 11)")
    g.add_argument("--aed-scale", type=float, default=0.3, help="weight of the auxiliary AED loss")
    g.add_argument("--warmup", choices=WARMUPS, default="prior",
                   help="hmm only: the warm-up stage: prior (default): the HMM with a sequence prior and "
                        "the --warmup-*-scale scales; ctc: plain CTC; none")
    g.add_argument("--warmup-epochs", type=int, default=None,
                   help="hmm only: warm-up epochs (default: (epochs + 1) // 3; ctc: at least, see --warmup-max-ler)")
    g.add_argument("--warmup-posterior-scale", type=float, default=0.5, help="alpha of the prior warm-up")
    g.add_argument("--warmup-transition-scale", type=float, default=0.2, help="gamma of the prior warm-up")
    g.add_argument("--warmup-prior-scale", type=float, default=0.3,
                   help="beta of the prior warm-up (sequence prior, stop-gradient)")
    g.add_argument("--ctc-warmup-epochs", type=int, default=None,
                   help="hmm only: same as --warmup ctc --warmup-epochs N")
    g.add_argument("--warmup-max-ler", type=float, default=0.5,
                   help="hmm, --warmup ctc: extend the CTC warm-up, one epoch at a time up to 2/3 of --epochs, "
                        "while the dev greedy LER is above this")
    g = parser.add_argument_group("optimizer")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--peak-lr", type=float, default=3e-3, help="one-cycle peak (default: 3e-3)")
    g.add_argument("--final-lr", type=float, default=1e-6)
    g.add_argument("--weight-decay", type=float, default=1e-2)
    g.add_argument("--grad-clip", type=float, default=5.0)
    g = parser.add_argument_group("data")
    g.add_argument("--max-duration", type=float, default=30.0, help="seconds of audio per batch (per rank)")
    g.add_argument("--num-workers", type=int, default=0)
    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--resume", action="store_true", help="continue from EXP/last.pt")
    g.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    g.add_argument("--no-progress", action="store_true", help="no tqdm bars")


def one_cycle_lr(progress: float, peak_lr: float, final_lr: float = 1e-6) -> float:
    """One-cycle LR (OCLR, A.4.5/A.4.6; Zhou et al., 2022) at ``progress`` in [0, 1] of training.

    The cycle takes 90% of training: linear from ``peak_lr / 10`` up to ``peak_lr`` over the
    first 45%, back down to ``peak_lr / 10`` over the next 45%; then linear to ``final_lr``.
    """
    low, p = peak_lr / 10, min(max(progress, 0.0), 1.0)
    if p < 0.45:
        return low + (peak_lr - low) * p / 0.45
    if p < 0.9:
        return peak_lr - (peak_lr - low) * (p - 0.45) / 0.45
    return low + (final_lr - low) * (p - 0.9) / 0.1


def topology_params(args: argparse.Namespace) -> Dict[str, Any]:
    """Keyword arguments of the topology class from ``--label-loop``/``--silence-loop``."""
    if args.topology == "hmm":
        return {"label_loop": 0.5 if args.label_loop is None else args.label_loop,
                "silence_loop": 0.96 if args.silence_loop is None else args.silence_loop}
    return {"label_loop": args.label_loop, "blank_loop": args.silence_loop}


def criterion_scales(args: argparse.Namespace) -> Dict[str, Any]:
    """α, β, γ, prior mode and the warm-up stage with the per-topology defaults filled in."""
    hmm = args.topology == "hmm"
    if args.prior_scale and args.prior == "none":
        raise ValueError("--prior-scale needs a --prior mode other than none")
    warmup, epochs = args.warmup, args.warmup_epochs
    if args.ctc_warmup_epochs is not None:  # the older spelling of --warmup ctc --warmup-epochs N
        warmup, epochs = "ctc", args.ctc_warmup_epochs
    if not hmm or warmup == "none":
        warmup, epochs = "none", 0
    elif epochs is None:
        epochs = (args.epochs + 1) // 3
    if hmm and not 0 <= epochs < args.epochs:
        raise ValueError(f"--warmup-epochs (--ctc-warmup-epochs) must be in [0, --epochs={args.epochs}) so that "
                         f"the HMM trains, got {epochs}")
    if epochs == 0:
        warmup = "none"
    return {
        "posterior_scale": (0.7 if hmm else 1.0) if args.posterior_scale is None else args.posterior_scale,
        "transition_scale": (0.3 if hmm else 1.0) if args.transition_scale is None else args.transition_scale,
        "prior_scale": args.prior_scale, "prior": args.prior, "prior_grad": args.prior_grad,
        "warmup": warmup, "warmup_epochs": epochs,
        "warmup_scales": {"posterior_scale": args.warmup_posterior_scale,
                          "transition_scale": args.warmup_transition_scale, "prior_scale": args.warmup_prior_scale},
        "max_warmup_epochs": max(epochs, min(2 * args.epochs // 3, args.epochs - 1)) if warmup == "ctc" else epochs,
        "warmup_max_ler": args.warmup_max_ler,
    }  # fmt: skip


def _setup_distributed(args) -> tuple:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.device is not None:
        device = torch.device(args.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return device, rank, world


class _Criterion:
    """Loss of one batch under the current stage (warm-up or the configured criterion)."""

    def __init__(self, args, num_labels: int, scales: Dict[str, Any], static_prior: Optional[torch.Tensor]):
        self.args, self.scales = args, scales
        self.topology = make_topology(args.topology, num_labels, **topology_params(args))
        self.ctc_topology = make_topology("ctc", num_labels) if scales["warmup"] == "ctc" else None
        self.static_prior = static_prior
        self.running = RunningPrior(num_labels)
        self.warmup_end = scales["warmup_epochs"]

    def maybe_extend_warmup(self, epoch: int, dev_ler: Optional[float]) -> None:
        """After CTC warm-up epoch ``epoch``: one more CTC epoch if the dev LER is still too high."""
        if (self.scales["warmup"] == "ctc" and epoch + 1 == self.warmup_end < self.scales["max_warmup_epochs"]
                and (dev_ler is None or dev_ler > self.scales["warmup_max_ler"])):
            self.warmup_end += 1
            logger.info("dev LER %s > %s: CTC warm-up extended to %d epochs", dev_ler,
                        self.scales["warmup_max_ler"], self.warmup_end)

    def stage(self, epoch: int) -> str:
        """``ctc-warmup``, ``prior-warmup`` or ``main``."""
        return f"{self.scales['warmup']}-warmup" if epoch < self.warmup_end else "main"

    def stage_setup(self, epoch: int):
        """(topology, α, γ, β, prior mode) of the stage ``epoch`` belongs to."""
        stage = self.stage(epoch)
        if stage == "ctc-warmup":
            return self.ctc_topology, 1.0, 1.0, 0.0, "none"
        if stage == "prior-warmup":
            w = self.scales["warmup_scales"]
            return self.topology, w["posterior_scale"], w["transition_scale"], w["prior_scale"], "seq"
        s = self.scales
        return self.topology, s["posterior_scale"], s["transition_scale"], s["prior_scale"], s["prior"]

    def log_prior(self, log_probs, lengths, mode: str, stop: bool) -> Optional[torch.Tensor]:
        if mode == "static":
            return self.static_prior.to(log_probs.device)
        if mode == "seq":
            return sequence_log_prior(log_probs, lengths, stop_grad=stop)
        if mode == "batch":
            return batch_log_prior(log_probs, lengths, stop_grad=stop)
        if mode == "running":
            return self.running.update(log_probs, lengths).to(log_probs.device)
        return None

    def __call__(self, model, batch, epoch: int) -> Dict[str, torch.Tensor]:
        device = batch.features.device
        targets = lengths_t = None
        if self.args.aed_layers > 0:
            targets, lengths_t = transcript_targets(batch.transcripts, device=device)
        out = model(batch.features, batch.feature_lengths, targets, lengths_t)
        logits, lengths = out["logits"], out["lengths"]
        inner = model.module if hasattr(model, "module") else model
        if self.args.normed_grad:
            log_probs = normed_grad_log_softmax(logits, lengths, log_probs_fn=inner.ctc_log_probs)
        else:
            log_probs = inner.ctc_log_probs(logits)
        topology, alpha, gamma, beta, mode = self.stage_setup(epoch)
        stop = self.stage(epoch) == "prior-warmup" or not self.scales["prior_grad"]
        log_prior = self.log_prior(log_probs, lengths, mode, stop) if beta else None
        graphs = topology.compile(batch.transcripts, device=device)
        nll = full_sum_loss(log_probs, lengths, graphs, posterior_scale=alpha, prior_scale=beta,
                            log_prior=log_prior, transition_scale=gamma)
        finite = torch.isfinite(nll)
        frames = lengths[finite].sum().clamp(min=1)
        loss = nll[finite].sum().float() / frames
        result = {"loss": loss, "fullsum": loss.detach(), "frames": frames, "infeasible": (~finite).sum()}
        if "aed_nll" in out:
            aed = out["aed_nll"][finite].sum() / frames
            result["aed"] = aed.detach()
            result["loss"] = loss + self.args.aed_scale * aed
        return result


def _corpus_prior(model, loader, device) -> Optional[torch.Tensor]:
    prior = CorpusPrior(model.num_labels)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            if len(batch):
                batch = batch.to(device)
                h, lengths = model.forward_encoder(batch.features, batch.feature_lengths)
                prior.accumulate(model.ctc_log_probs(model.ctc_logits(h)), lengths)
    if int(prior.num_frames) == 0:
        logger.warning("no training frames to estimate the corpus prior from; storing None")
        return None
    return prior.log_prior.cpu()


def train(args: argparse.Namespace) -> Dict[str, Any]:
    """Trains per ``args`` (see :func:`add_arguments` plus ``data_dir``, ``unit``, ``train_part``,
    ``dev_part``, ``exp_dir``); returns the final dev evaluation (also ``EXP/eval.json``)."""
    device, rank, world = _setup_distributed(args)
    exp = Path(args.exp_dir)
    data = Path(args.data_dir)
    tokenizer = Tokenizer.load(data / f"lang_{args.unit}")
    C = tokenizer.num_labels
    scales = criterion_scales(args)
    torch.manual_seed(args.seed)
    config = ConformerConfig.from_preset(
        args.preset, C, subsampling=args.subsampling, dropout=args.dropout, blank_sep=args.blank_sep,
        aed_layers=args.aed_layers, spec_augment=args.spec_augment,
    )  # fmt: skip
    model = ConformerModel(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.peak_lr, eps=1e-8, weight_decay=args.weight_decay)
    train_cuts = data / f"cuts_{args.train_part}.jsonl.gz"
    dev_cuts = data / f"cuts_{args.dev_part}.jsonl.gz"
    loader = make_dataloader(train_cuts, tokenizer, args.max_duration, shuffle=True, num_workers=args.num_workers,
                             seed=args.seed)
    dev_loader = make_dataloader(dev_cuts, tokenizer, args.max_duration, rank=0, world_size=1)
    static_prior = None
    if args.prior == "static":
        static_prior = prior_from_transcripts(
            [t for b in make_dataloader(train_cuts, tokenizer, args.max_duration, rank=0, world_size=1)
             for t in b.transcripts], C)
    crit = _Criterion(args, C, scales, static_prior)
    start_epoch, step, best = 0, 0, math.inf
    last_path, best_path = exp / "last.pt", exp / "best.pt"
    if args.resume and last_path.is_file():
        state = read_checkpoint(last_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        crit.running.load_state_dict(state["running_prior"])
        crit.warmup_end = state["warmup_end"]
        start_epoch, step, best = state["epoch"], state["step"], state["best_dev_loss"]
        set_rng_state(state["rng"])
        logger.info("resumed from %s after epoch %d (step %d)", last_path, start_epoch, step)
    elif args.resume:
        logger.warning("--resume: %s does not exist, starting from scratch", last_path)
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    loader.sampler.set_epoch(0)
    steps_per_epoch = max(1, sum(1 for _ in loader.sampler))
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        exp.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(exp / "tensorboard"))
        logger.info("model: %s, %d parameters; criterion %s", args.preset, model.num_params, scales)
    meta = {
        "model_config": config.to_dict(), "tokenizer": tokenizer.to_dict(),
        "topology": {"kind": args.topology, "params": topology_params(args)},
        "criterion": scales, "frame_shift_s": FRAME_SHIFT_S, "subsampling": config.subsampling,
        "args": vars(args), "corpus_prior": None,
    }  # fmt: skip
    metrics: Dict[str, Any] = {}
    for epoch in range(start_epoch, args.epochs):
        if epoch == crit.warmup_end and epoch > 0:
            best = math.inf  # the dev loss changes meaning with the criterion
        loader.sampler.set_epoch(epoch)
        ddp_model.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs} {crit.stage(epoch)}",
                   disable=rank != 0 or args.no_progress, total=steps_per_epoch)
        for i, batch in enumerate(bar):
            if len(batch) == 0:
                continue
            lr = one_cycle_lr((epoch + min(i / steps_per_epoch, 1.0)) / args.epochs, args.peak_lr, args.final_lr)
            for group in opt.param_groups:
                group["lr"] = lr
            out = crit(ddp_model, batch.to(device), epoch)
            opt.zero_grad()
            out["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            step += 1
            if writer is not None:
                writer.add_scalar("train/loss", float(out["loss"]), step)
                writer.add_scalar("train/lr", lr, step)
                writer.add_scalar("train/grad_norm", float(grad_norm), step)
                bar.set_postfix(loss=f"{float(out['loss']):.3f}", lr=f"{lr:.2e}")
        if rank == 0:
            topo, alpha, gamma, _, _ = crit.stage_setup(epoch)
            metrics = evaluate(model, dev_loader, topo, alpha, gamma, device=device, tokenizer=tokenizer)
            metrics.update(epoch=epoch + 1, step=step, stage=crit.stage(epoch))
            logger.info("epoch %d dev: %s", epoch + 1, json.dumps(metrics))
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and value is not None:
                    writer.add_scalar(f"dev/{key}", value, epoch + 1)
            crit.maybe_extend_warmup(epoch, metrics["ler"])
            improved = metrics["loss"] < best
            best = min(best, metrics["loss"])
            state = {**meta, "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": {"kind": "oclr", "steps_per_epoch": steps_per_epoch},
                     "running_prior": crit.running.state_dict(), "epoch": epoch + 1, "step": step,
                     "best_dev_loss": best, "stage": crit.stage(epoch), "dev": metrics, "rng": rng_state(),
                     "warmup_end": crit.warmup_end}
            save_checkpoint(state, last_path)
            if improved:
                save_checkpoint(state, best_path)
        if world > 1:
            shared = [crit.warmup_end]
            dist.broadcast_object_list(shared, src=0)  # rank 0 decides the stage
            crit.warmup_end = shared[0]
    if rank == 0 and last_path.is_file():
        prior_loader = make_dataloader(train_cuts, tokenizer, args.max_duration, rank=0, world_size=1)
        metrics = _finish(model, prior_loader, dev_loader, crit, args, device, last_path, best_path, tokenizer)
        writer.close()
    if world > 1:
        dist.destroy_process_group()
    return metrics


def _finish(model, loader, dev_loader, crit, args, device, last_path: Path, best_path: Path,
            tokenizer: Tokenizer) -> Dict[str, Any]:
    """Corpus priors (whole training part, rank 0) into last.pt and best.pt; final evaluation of
    best.pt -> EXP/eval.json."""
    for path in (last_path, best_path):
        if not path.is_file():
            continue
        state = read_checkpoint(path)
        model.load_state_dict(state["model"])
        state["corpus_prior"] = _corpus_prior(model, loader, device)
        save_checkpoint(state, path)
    final = read_checkpoint(best_path if best_path.is_file() else last_path)
    model.load_state_dict(final["model"])
    topo, alpha, gamma, _, _ = crit.stage_setup(args.epochs - 1)
    metrics = evaluate(model, dev_loader, topo, alpha, gamma, device=device, tokenizer=tokenizer)
    metrics.update(checkpoint=str(best_path if best_path.is_file() else last_path), epoch=final["epoch"])
    (Path(args.exp_dir) / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("final dev evaluation: %s", json.dumps(metrics))
    return metrics
