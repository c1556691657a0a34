"""The full-sum training criterion (eq. 5, 6) and the recipe's stages.

Dimension symbols:
  B: batch size.  T: encoder frames.  C: output columns.

:class:`FullSumCriterion` is the one criterion of fsalign: a topology, the scales of eq. (6)
and a prior mode (:data:`fsalign.scores.priors.PRIOR_MODES`). The LibriSpeech recipe and the
synthetic laboratory train with it, and the recipe's dev evaluation scores with the same
object, so ``best.pt`` is chosen by the criterion being trained.

:class:`StagedCriterion` is the recipe's schedule of criteria: an HMM starts with a warm-up
stage (``--warmup``): by default the first third of the epochs train the HMM itself with a
sequence prior (α=0.5, γ=0.2, β=0.3, stop-grad), which keeps it out of the all-silence state
full-sum training from scratch falls into; then α=0.7, γ=0.3 without a prior. ``--warmup
ctc`` trains plain CTC on the same output layer first instead (column 0 is CTC's blank and
the HMM's silence).
"""
import argparse
import logging
from typing import Any, Dict, Optional

import torch

from fsalign.engine.builtin import make_topology
from fsalign.engine.scales import Scales
from fsalign.engine.topology import Topology, TrainingGraphs
from fsalign.scores.matrix import ScoreMatrix
from fsalign.scores.normgrad import normed_grad_log_softmax
from fsalign.scores.prefix import transcript_targets
from fsalign.scores.priors import PRIOR_MODES, RunningPrior, log_prior_for
from fsalign.training.args import topology_params
from fsalign.util import Seconds, check_option

__all__ = ["FullSumCriterion", "StagedCriterion"]

logger = logging.getLogger(__name__)


class FullSumCriterion:
    """Full-sum NLL under a topology with the scales and the prior of eq. (6).

    Args:
      topology: the label topology.
      scales: α, β, γ (the log prior is filled in per batch from ``prior``).
      prior: the prior mode (:data:`~fsalign.scores.priors.PRIOR_MODES`) used when β != 0.
      stop_grad: detach seq/batch priors.
      static_prior: Tensor of shape (C,) for ``prior="static"``.
      running: the :class:`~fsalign.scores.priors.RunningPrior` for ``prior="running"``.

    Raises:
      FsalignError: an unknown prior mode, β != 0 without a prior mode, or a static/running
        prior mode without its prior.
    """

    def __init__(self, topology: Topology, scales: Scales = Scales(), prior: str = "none", stop_grad: bool = True,
                 static_prior: Optional[torch.Tensor] = None, running: Optional[RunningPrior] = None):
        check_option("prior mode", prior, prior in PRIOR_MODES, f"one of {PRIOR_MODES}")
        check_option("prior mode", prior, not (scales.prior_scale and prior == "none"),
                     "other than none when the prior scale is not 0")
        check_option("static prior", static_prior, prior != "static" or static_prior is not None, "given")
        check_option("running prior", running, prior != "running" or running is not None, "given")
        self.topology, self.scales, self.prior, self.stop_grad = topology, scales, prior, stop_grad
        self.static_prior, self.running = static_prior, running

    def __repr__(self) -> str:
        s = self.scales
        return (f"FullSumCriterion({self.topology.name}, α={s.posterior_scale}, β={s.prior_scale} ({self.prior}), "
                f"γ={s.transition_scale})")

    def log_prior(self, log_probs: torch.Tensor, lengths: torch.Tensor, update: bool = True) -> Optional[torch.Tensor]:
        """The batch's log prior (None without one); ``update=False`` leaves a running prior as it is."""
        if not self.scales.prior_scale or self.prior == "none":
            return None
        if self.prior == "running" and not update:
            return self.running.log_prior.to(log_probs.device)
        return log_prior_for(self.prior, log_probs, lengths, stop_grad=self.stop_grad, static=self.static_prior,
                             running=self.running)

    def scales_for(self, log_probs: torch.Tensor, lengths: torch.Tensor, update: bool = True) -> Scales:
        """The scales with this batch's log prior filled in."""
        return self.scales.replace(log_prior=self.log_prior(log_probs, lengths, update))

    def matrix(self, log_probs: torch.Tensor, lengths: torch.Tensor, graphs: TrainingGraphs,
               frame_shift_s: Seconds = 0.01, subsampling: int = 1, update: bool = True) -> ScoreMatrix:
        """The batch as a :class:`~fsalign.scores.matrix.ScoreMatrix` under this criterion."""
        return ScoreMatrix.from_posteriors(log_probs, lengths, graphs, self.scales_for(log_probs, lengths, update),
                                           frame_shift_s, subsampling)

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor, graphs: TrainingGraphs,
                 log_prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Full-sum NLL per utterance, Tensor of shape (B,), float64 (``+inf`` where infeasible).

        Args:
          log_probs: Tensor of shape (B, T, C), normalised log-probabilities.
          lengths: Tensor of shape (B,).
          graphs: the batch's training graphs under :attr:`topology`.
          log_prior: use this log prior instead of the prior mode's (e.g. one per member of
            the synthetic laboratory's ensembles).
        """
        scales = self.scales_for(log_probs, lengths) if log_prior is None else self.scales.replace(log_prior=log_prior)
        return ScoreMatrix(log_probs, lengths, graphs, scales).loss()


class StagedCriterion:
    """The recipe's criteria by epoch: an optional warm-up stage, then the configured criterion.

    Args:
      args: the parsed training options (:func:`fsalign.training.args.add_arguments`).
      num_labels: C.
      scales: :func:`fsalign.training.args.criterion_scales` of ``args``.
      static_prior: Tensor of shape (C,) for ``--prior static``.
    """

    def __init__(self, args: argparse.Namespace, num_labels: int, scales: Dict[str, Any],
                 static_prior: Optional[torch.Tensor]):
        self.args, self.scales = args, scales
        self.topology = make_topology(args.topology, num_labels, **topology_params(args))
        self.running = RunningPrior(num_labels)
        self.main = FullSumCriterion(
            self.topology, Scales(scales["posterior_scale"], scales["prior_scale"], None, scales["transition_scale"]),
            prior=scales["prior"], stop_grad=not scales["prior_grad"], static_prior=static_prior,
            running=self.running)
        self.warmup: Optional[FullSumCriterion] = None
        if scales["warmup"] == "ctc":
            self.warmup = FullSumCriterion(make_topology("ctc", num_labels))
        elif scales["warmup"] == "prior":
            w = scales["warmup_scales"]
            self.warmup = FullSumCriterion(
                self.topology, Scales(w["posterior_scale"], w["prior_scale"], None, w["transition_scale"]),
                prior="seq" if w["prior_scale"] else "none", stop_grad=True)
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

    def criterion(self, epoch: int) -> FullSumCriterion:
        """The criterion of the stage ``epoch`` belongs to."""
        return self.main if self.stage(epoch) == "main" else self.warmup

    def __call__(self, model, batch, epoch: int) -> Dict[str, torch.Tensor]:
        """Loss of one batch under the stage of ``epoch``: the full-sum NLL per frame (+ the AED loss).

        Returns:
          dict with ``loss`` (to minimise), ``fullsum`` and ``aed`` (detached parts), ``frames``
          and ``infeasible`` (utterances too short for their transcripts).
        """
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
        criterion = self.criterion(epoch)
        nll = criterion(log_probs, lengths, criterion.topology.compile(batch.transcripts, device=device))
        finite = torch.isfinite(nll)
        frames = lengths[finite].sum().clamp(min=1)
        loss = nll[finite].sum().float() / frames
        result = {"loss": loss, "fullsum": loss.detach(), "frames": frames, "infeasible": (~finite).sum()}
        if "aed_nll" in out:
            aed = out["aed_nll"][finite].sum() / frames
            result["aed"] = aed.detach()
            result["loss"] = loss + self.args.aed_scale * aed
        return result
