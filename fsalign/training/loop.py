"""The one training loop: :func:`train_steps`, and the recipe's :func:`train` built on it.

:func:`train_steps` is the optimisation loop every trainer of fsalign runs (the LibriSpeech
recipe below, ``fsalign align-corpus`` through it, and the synthetic laboratory): for each
batch, the loss, a backward pass, optional gradient clipping and an optimizer step, with the
learning rate set from a schedule before the step.

:func:`train` trains a Conformer with a full-sum criterion
(:class:`~fsalign.training.criterion.StagedCriterion`) from lhotse cuts. Optimizer: AdamW with
the one-cycle schedule of A.4.5/A.4.6 (:func:`one_cycle_lr`). Checkpoints: ``EXP/last.pt``
every epoch, ``EXP/best.pt`` by dev loss under the criterion of the current stage (its prior
included), both written atomically; ``--resume`` continues from ``EXP/last.pt`` exactly
(model, optimizer, schedule position, RNG states; the sampler order is a function of seed and
epoch). DDP under torchrun: lhotse's samplers shard by rank; only rank 0 writes.

Dimension symbols:
  B: batch size.  T': feature frames.  T: encoder frames.  C: output columns.
"""
import argparse
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

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
from fsalign.errors import FsalignError
from fsalign.models.conformer import ConformerConfig, ConformerModel
from fsalign.scores.priors import estimate_corpus_prior, prior_from_transcripts
from fsalign.training.args import check_arguments, criterion_scales, topology_params
from fsalign.training.criterion import StagedCriterion
from fsalign.training.evaluation import evaluate
from fsalign.util import atomic_open, check_output_path

__all__ = ["train_steps", "one_cycle_lr", "corpus_log_prior", "train"]

logger = logging.getLogger(__name__)

LossFn = Callable[[Any], Any]


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable, loss_fn: LossFn,
                lr: Optional[Callable[[int], float]] = None, grad_clip: Optional[float] = None,
                on_step: Optional[Callable[[int, Any, Optional[float]], None]] = None) -> int:
    """One pass of optimisation over ``batches``: loss, backward, clipping, step.

    Args:
      model: the module being trained (put in train mode here; its parameters are clipped).
      optimizer: its optimizer.
      batches: any iterable of batches (a DataLoader, a generator of synthetic batches).
      loss_fn: batch -> a scalar loss tensor, or a dict holding it as ``"loss"``.
      lr: k -> learning rate of the k-th step of this pass (set before the step), or None.
      grad_clip: clip the gradient norm to this value, or None.
      on_step: called as ``on_step(k, output of loss_fn, gradient norm or None)`` after step k.

    Returns:
      The number of steps taken.
    """
    model.train()
    steps = 0
    for k, batch in enumerate(batches):
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr(k)
        out = loss_fn(batch)
        if out is None:  # nothing to learn from (an empty batch)
            continue
        loss = out["loss"] if isinstance(out, dict) else out
        optimizer.zero_grad()
        loss.backward()
        norm = None
        if grad_clip is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
        optimizer.step()
        steps += 1
        if on_step is not None:
            on_step(k, out, norm)
    return steps


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


def corpus_log_prior(model: ConformerModel, loader, device) -> Optional[torch.Tensor]:
    """The model's average posterior over a corpus (Table 14's prior), or None without frames."""
    model.eval()

    def batches():
        with torch.no_grad():
            for batch in loader:
                if len(batch):
                    batch = batch.to(device)
                    yield model.log_probs(batch.features, batch.feature_lengths)

    try:
        return estimate_corpus_prior(batches()).cpu()
    except ValueError:
        logger.warning("no training frames to estimate the corpus prior from; storing None")
        return None


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


def _check_data(args) -> None:
    data = Path(args.data_dir)
    for path, what in ((data / f"lang_{args.unit}" / "tokenizer.json", f"the {args.unit} tokenizer"),
                       (data / f"cuts_{args.train_part}.jsonl.gz", "the training cuts"),
                       (data / f"cuts_{args.dev_part}.jsonl.gz", "the dev cuts")):
        if not path.is_file():
            raise FsalignError(f"{path} does not exist: {what} (run recipes/librispeech/prepare.py for "
                               f"--unit {args.unit} and the parts first)")


def train(args: argparse.Namespace) -> Dict[str, Any]:
    """Trains per ``args``; returns the final dev evaluation (also ``EXP/eval.json``).

    ``args`` are those of :func:`fsalign.training.args.add_arguments` plus ``data_dir``, ``unit``,
    ``train_part``, ``dev_part``, ``exp_dir``.

    Raises:
      FsalignError: an option outside its range or missing prepared data (before any training).
    """
    check_arguments(args)
    _check_data(args)
    check_output_path(args.exp_dir, "--exp-dir")
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
    )
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
    crit = StagedCriterion(args, C, scales, static_prior)
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
    }
    metrics: Dict[str, Any] = {}
    for epoch in range(start_epoch, args.epochs):
        if epoch == crit.warmup_end and epoch > 0:
            best = math.inf  # the dev loss changes meaning with the criterion
        loader.sampler.set_epoch(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs} {crit.stage(epoch)}",
                   disable=rank != 0 or args.no_progress, total=steps_per_epoch)

        def lr_at(k: int, epoch: int = epoch) -> float:
            return one_cycle_lr((epoch + min(k / steps_per_epoch, 1.0)) / args.epochs, args.peak_lr, args.final_lr)

        def loss_of(batch, epoch: int = epoch):
            return crit(ddp_model, batch.to(device), epoch) if len(batch) else None

        def log(k: int, out, grad_norm, epoch: int = epoch) -> None:
            nonlocal step
            step += 1
            if writer is not None:
                writer.add_scalar("train/loss", float(out["loss"]), step)
                writer.add_scalar("train/lr", lr_at(k), step)
                writer.add_scalar("train/grad_norm", grad_norm, step)
                bar.set_postfix(loss=f"{float(out['loss']):.3f}", lr=f"{lr_at(k):.2e}")

        train_steps(ddp_model, opt, bar, loss_of, lr=lr_at, grad_clip=args.grad_clip, on_step=log)
        if rank == 0:
            metrics = evaluate(model, dev_loader, crit.criterion(epoch), device=device, tokenizer=tokenizer)
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
            # last.pt is what a rerun resumes from, so it is written last: a kill between the two
            # leaves best.pt ahead of last.pt, and the resumed epoch writes the same best.pt again
            if improved:
                save_checkpoint(state, best_path)
            save_checkpoint(state, last_path)
        if world > 1:
            shared = [crit.warmup_end]
            dist.broadcast_object_list(shared, src=0)  # rank 0 decides the stage
            crit.warmup_end = shared[0]
    if rank == 0 and last_path.is_file():
        prior_loader = make_dataloader(train_cuts, tokenizer, args.max_duration, rank=0, world_size=1)
        metrics = _finish(model, prior_loader, dev_loader, crit, args, device, last_path, best_path, tokenizer)
        writer.close()
    if world > 1:
        # the DDP wrapper's reducer holds the process group: release it first, or destroying the
        # group can wait forever for a gloo thread that needs the GIL this thread holds
        del ddp_model
        dist.destroy_process_group()
    return metrics


def _finish(model, loader, dev_loader, crit: StagedCriterion, args, device, last_path: Path, best_path: Path,
            tokenizer: Tokenizer) -> Dict[str, Any]:
    """Corpus priors into last.pt and best.pt, then the final evaluation of best.pt.

    The priors are over the whole training part (rank 0); the evaluation goes to EXP/eval.json.
    """
    for path in (last_path, best_path):
        if not path.is_file():
            continue
        state = read_checkpoint(path)
        model.load_state_dict(state["model"])
        state["corpus_prior"] = corpus_log_prior(model, loader, device)
        save_checkpoint(state, path)
    final = read_checkpoint(best_path if best_path.is_file() else last_path)
    model.load_state_dict(final["model"])
    metrics = evaluate(model, dev_loader, crit.criterion(args.epochs - 1), device=device, tokenizer=tokenizer)
    metrics.update(checkpoint=str(best_path if best_path.is_file() else last_path), epoch=final["epoch"])
    with atomic_open(Path(args.exp_dir) / "eval.json", "w") as f:  # its presence means training is done
        f.write(json.dumps(metrics, indent=2) + "\n")
    logger.info("final dev evaluation: %s", json.dumps(metrics))
    return metrics
