"""Training and evaluation runs on the synthetic data (section 6.1, 7.1.1).

One :class:`RunConfig` is one row of a paper table: data distribution, model,
label topology, scales α/β/γ (eq. 6), prior type, optional normalised gradient
(eq. 11) or blank separation (eq. 15-17), optimiser settings.
:func:`run_group` trains the seeds of a configuration together (one model
member per seed, see :mod:`fsalign.models.synthetic`) and returns the metrics
of :mod:`fsalign.synthetic.evaluation` per seed; :func:`run_jobs` spreads
groups over worker processes (one torch thread each); :func:`summarize` gives
mean and standard deviation over seeds.

Dimension symbols legend:
  E: members (seeds trained together)
  B: batch size
  T: frames (padded)
  C: alignment labels (score-matrix columns), ε in column 0
"""
import functools
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from fsalign.engine.scales import Scales
from fsalign.engine.topology import Topology
from fsalign.errors import FsalignError
from fsalign.models.synthetic import MODEL_NAMES, build_model
from fsalign.scores.posterior import blank_separated_log_probs
from fsalign.scores.priors import prior_from_alignment
from fsalign.synthetic.data import (
    EPSILON,
    SyntheticBatch,
    SyntheticConfig,
    SyntheticGenerator,
)
from fsalign.synthetic.evaluation import evaluate_log_probs
from fsalign.synthetic.graphs import TOPOLOGIES, GraphBank, build_topology
from fsalign.training.criterion import FullSumCriterion
from fsalign.training.loop import train_steps
from fsalign.util import single_thread, use_fast_mkl_on_amd  # noqa: F401  (importable from here too)

__all__ = [
    "RunConfig", "RunResult", "make_topology", "make_criterion", "train", "evaluate", "run_group", "run_one",
    "METRICS", "PRIORS",
]

logger = logging.getLogger(__name__)

METRICS = ("ler", "fw_ce", "blank_posterior", "tse")
PRIORS = ("none", "static", "seq", "batch")
"""Prior modes of a run (:data:`fsalign.scores.priors.PRIOR_MODES`; ``static``: the ground truth's
label frequencies). The former spelling ``posterior_avg`` with ``prior_scope`` ``sequence`` /
``batch`` is read as ``seq`` / ``batch``."""
PRIOR_SCOPES = (None, "sequence", "batch")
INITS = ("default", "perfect")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs.

    Attributes:
      data: the synthetic data distribution.
      model: ``"ffnn"`` (eq. 28) or ``"blstm"``.
      hidden, num_layers: BLSTM size (units per direction, layers).
      init: ``"default"`` (PyTorch's initialisation) or ``"perfect"`` (scaled identity, A.5).
      perfect_scale: the scale c of the perfect initialisation.
      topology: ``"hmm"`` (ε only at word boundaries) or ``"ctc"`` (ε anywhere).
      posterior_scale, prior_scale, transition_scale: α, β, γ of eq. 6.
      prior: ``"none"``, ``"static"`` (label frequencies of the ground truth), ``"seq"``
        (average posterior of each sequence) or ``"batch"`` (of each member's batch).
      stop_grad: posterior-average priors only: detach them (None for other priors).
      prior_scope: the former way of choosing between ``seq`` and ``batch`` with
        ``prior="posterior_avg"`` (``"sequence"`` or ``"batch"``); None otherwise.
      label_loop, silence_loop: HMM loop probabilities; None estimates them from
        the ground truth of the data distribution (``estimate_loop_probabilities``).
      normed_grad: use the normalised gradient of eq. 11 (``fsalign.scores.normgrad``).
      normed_grad_min, normed_grad_max, normed_grad_scope: its clamping and scope
        (``"batch"``: each member's batch, or ``"seq"``).
      blank_separation: blank-separated output (eq. 15-17) instead of the softmax
        (combinable with ``normed_grad``, as in Table 4).
      batch_size, steps, learning_rate: Adam training.
      eval_size, eval_seed: the held-out set (the same for every training seed).
      align_transition_scale: γ of the Viterbi alignment used for the TSE.
    """

    data: SyntheticConfig = field(default_factory=SyntheticConfig)
    model: str = "ffnn"
    hidden: int = 20
    num_layers: int = 2
    init: str = "default"
    perfect_scale: float = 10.0
    topology: str = "hmm"
    posterior_scale: float = 1.0
    prior_scale: float = 0.0
    transition_scale: float = 0.0
    prior: str = "none"
    stop_grad: Optional[bool] = None
    prior_scope: Optional[str] = None
    label_loop: Optional[float] = None
    silence_loop: Optional[float] = None
    normed_grad: bool = False
    normed_grad_min: float = 0.5
    normed_grad_max: float = 1.1
    normed_grad_scope: str = "batch"
    blank_separation: bool = False
    batch_size: int = 10
    steps: int = 300
    learning_rate: float = 0.01
    eval_size: int = 200
    eval_seed: int = 987_654_321
    align_transition_scale: float = 0.0

    def __post_init__(self):
        if self.prior == "posterior_avg":  # the former spelling
            object.__setattr__(self, "prior", "batch" if self.prior_scope == "batch" else "seq")
            object.__setattr__(self, "prior_scope", None)
        checks = [
            ("model", self.model, MODEL_NAMES),
            ("topology", self.topology, TOPOLOGIES),
            ("prior", self.prior, PRIORS),
            ("prior_scope", self.prior_scope, PRIOR_SCOPES),
            ("init", self.init, INITS),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise FsalignError(f"{name} must be one of {allowed}, got {value!r}")
        if self.prior == "none" and self.prior_scale != 0.0:
            raise FsalignError(f"prior_scale={self.prior_scale} needs a prior, got prior='none'")
        if self.prior_scope is not None:
            raise FsalignError(f"prior_scope applies to prior='posterior_avg' only, got prior={self.prior!r}")
        averaged = self.prior in ("seq", "batch")
        if not averaged and self.stop_grad is not None:
            raise FsalignError(f"stop_grad applies to the posterior-average priors only, got prior={self.prior!r}")
        if averaged and self.stop_grad is None:
            object.__setattr__(self, "stop_grad", True)
        if self.normed_grad_scope not in ("batch", "seq"):
            raise FsalignError(f"normed_grad_scope must be 'batch' or 'seq', got {self.normed_grad_scope!r}")
        if self.batch_size < 1 or self.steps < 0 or self.eval_size < 1:
            raise FsalignError(
                f"batch_size and eval_size must be >= 1 and steps >= 0, got {self.batch_size}, "
                f"{self.eval_size}, {self.steps}"
            )

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable dict of the fields, ``data`` via :meth:`SyntheticConfig.to_dict` (inverse of from_dict)."""
        d = asdict(self)
        d["data"] = self.data.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunConfig":
        """Rebuild a run config from :meth:`to_dict` output (``data`` as a dict or a :class:`SyntheticConfig`)."""
        d = dict(d)
        d["data"] = SyntheticConfig.from_dict(d["data"]) if isinstance(d.get("data"), dict) else d.get("data")
        return cls(**d)


@dataclass
class RunResult:
    """Metrics of one seed (see :mod:`fsalign.synthetic.evaluation`) and its cost.

    ``seconds`` (wall) and ``cpu_seconds`` (CPU time of the process) are the
    seed group's divided by its number of seeds.
    """

    seed: int
    metrics: Dict[str, float]
    seconds: float
    final_loss: float
    cpu_seconds: float = math.nan


def make_topology(cfg: RunConfig) -> Topology:
    """The label topology of a run (HMM loops estimated from the data when not given)."""
    return build_topology(cfg.topology, cfg.data, cfg.label_loop, cfg.silence_loop)


def static_log_prior(cfg: RunConfig, num_samples: int = 2000) -> torch.Tensor:
    """Log label frequencies of ``num_samples`` ground-truth alignments: Tensor of shape (C,)."""
    batch = SyntheticGenerator(cfg.data, seed=cfg.eval_seed + 1).batch(num_samples)
    return prior_from_alignment(batch.alignment.clamp(min=0), batch.lengths, cfg.data.num_labels)


def output_log_probs(cfg: RunConfig, logits: torch.Tensor, lengths: torch.Tensor, training: bool) -> torch.Tensor:
    """Normalised log-posteriors of every member's output.

    Args:
      cfg: the run configuration (its ``normed_grad*`` and ``blank_separation`` settings).
      logits: Tensor of shape (E, B, T, C).
      lengths: Tensor of shape (E, B).
      training: apply the normalised-gradient hook (training only; its values
        equal the softmax).

    Returns:
      Tensor of shape (E, B, T, C): softmax, blank-separated, or softmax with
      the normalised gradient of eq. 11 (scope per member).
    """
    if cfg.normed_grad and training:
        from fsalign.scores.normgrad import normed_grad_log_softmax

        fn = functools.partial(blank_separated_log_probs, blank=EPSILON) if cfg.blank_separation else None
        return torch.stack([
            normed_grad_log_softmax(
                logits[e], lengths[e], v_min=cfg.normed_grad_min, v_max=cfg.normed_grad_max,
                scope=cfg.normed_grad_scope, log_probs_fn=fn,
            )
            for e in range(logits.shape[0])
        ])
    if cfg.blank_separation:
        return blank_separated_log_probs(logits, blank=EPSILON)
    return logits.log_softmax(dim=-1)


def member_log_prior(cfg: RunConfig, criterion: FullSumCriterion, log_probs: torch.Tensor,
                     lengths: torch.Tensor) -> Optional[torch.Tensor]:
    """The log prior of eq. 6 for the flattened batch of all members.

    Args:
      cfg: the run configuration (not read here: the prior settings come from ``criterion``).
      criterion: the run's criterion (its prior mode and static prior).
      log_probs: Tensor of shape (E, B, T, C).
      lengths: Tensor of shape (E, B).

    Returns:
      None, Tensor of shape (C,) (static), or (E*B, C) (posterior average per sequence, or
      per member's batch: the members are independent runs).
    """
    E, B, T, C = log_probs.shape
    if criterion.prior == "batch" and criterion.scales.prior_scale:
        priors = [criterion.log_prior(log_probs[e], lengths[e]) for e in range(E)]
        return torch.stack(priors).repeat_interleave(B, dim=0)
    return criterion.log_prior(log_probs.reshape(E * B, T, C), lengths.reshape(-1))


def stack_batches(batches: Sequence[SyntheticBatch], device="cpu") -> Tuple[torch.Tensor, torch.Tensor, List]:
    """Pads E batches of B utterances into one; returns (features (E, B, T, D), lengths (E, B), word ids)."""
    T = max(b.features.shape[1] for b in batches)
    feats = torch.stack([torch.nn.functional.pad(b.features, (0, 0, 0, T - b.features.shape[1])) for b in batches])
    lengths = torch.stack([b.lengths for b in batches])
    word_ids = [ids for b in batches for ids in b.word_ids]
    return feats.to(device), lengths.to(device), word_ids


def build_members(cfg: RunConfig, seeds: Sequence[int], device="cpu") -> torch.nn.Module:
    """The model with one member per seed, member e initialised from ``seeds[e]``."""
    model = build_model(cfg.model, cfg.data.feature_dim, cfg.data.num_labels, cfg.hidden, cfg.num_layers,
                        num_models=len(seeds))
    model.reset_parameters(seeds)
    if cfg.init == "perfect":
        model.perfect_init(cfg.perfect_scale)
    return model.to(device)


def make_criterion(cfg: RunConfig, topology: Topology, device="cpu") -> FullSumCriterion:
    """The run's :class:`~fsalign.training.criterion.FullSumCriterion` (eq. 6 with its prior)."""
    static = static_log_prior(cfg).to(device) if cfg.prior == "static" else None
    return FullSumCriterion(topology, Scales(cfg.posterior_scale, cfg.prior_scale, None, cfg.transition_scale),
                            prior=cfg.prior, stop_grad=bool(cfg.stop_grad), static_prior=static)


def train(cfg: RunConfig, seeds: Sequence[int], device="cpu", topology: Optional[Topology] = None,
          callback: Optional[Callable[[int, torch.nn.Module], None]] = None) -> Tuple[torch.nn.Module, List[float]]:
    """Trains one member per seed with Adam on fresh batches of the seed's data generator.

    Member e sees only the data of ``SyntheticGenerator(cfg.data, seeds[e])``
    and its own loss (sum of the per-utterance NLLs over its batch, divided by
    the batch size); Adam is elementwise, so the members are independent runs.
    The loop is fsalign's one training loop (:func:`fsalign.training.loop.train_steps`)
    with the one criterion (:class:`~fsalign.training.criterion.FullSumCriterion`).

    Args:
      cfg: the run configuration (model, data, optimiser and criterion settings, number of steps).
      seeds: one seed per member: its initialisation and its data generator.
      device: where the model and the batches are put.
      topology: the label topology; default :func:`make_topology` of ``cfg``.
      callback: called as ``callback(steps_done, model)`` after every step
        (e.g. to evaluate learning curves).

    Returns:
      (model, per member the mean loss over the last 10 % of the steps).
    """
    seeds = [int(s) for s in seeds]
    E, B, C = len(seeds), cfg.batch_size, cfg.data.num_labels
    topology = topology if topology is not None else make_topology(cfg)
    model = build_members(cfg, seeds, device)
    gens = [SyntheticGenerator(cfg.data, seed=s) for s in seeds]
    criterion = make_criterion(cfg, topology, device)
    bank = GraphBank(topology, cfg.data)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    tail: List[torch.Tensor] = []

    def loss_of(batches: List[SyntheticBatch]) -> Dict[str, torch.Tensor]:
        feats, lengths, word_ids = stack_batches(batches, device)
        graphs = bank.compile(word_ids, device)
        log_probs = output_log_probs(cfg, model(feats, lengths), lengths, training=True)
        T = log_probs.shape[2]
        nll = criterion(log_probs.reshape(E * B, T, C), lengths.reshape(-1), graphs,
                        log_prior=member_log_prior(cfg, criterion, log_probs, lengths))
        per_member = nll.view(E, B).sum(dim=1) / B
        return {"loss": per_member.sum(), "per_member": per_member.detach()}

    def after(step: int, out: Dict[str, torch.Tensor], _) -> None:
        if step >= cfg.steps - max(cfg.steps // 10, 1):
            tail.append(out["per_member"].double())
        if callback is not None:
            callback(step + 1, model)
            model.train()

    batches = ([g.batch(B) for g in gens] for _ in range(cfg.steps))
    train_steps(model, opt, batches, loss_of, on_step=after)
    final = torch.stack(tail).mean(0).tolist() if tail else [math.nan] * E
    return model, final


def eval_batch(cfg: RunConfig) -> SyntheticBatch:
    """The held-out set: ``eval_size`` utterances from ``eval_seed`` (the same for every seed)."""
    return SyntheticGenerator(cfg.data, seed=cfg.eval_seed).batch(cfg.eval_size)


def evaluate(cfg: RunConfig, model: torch.nn.Module, batch: Optional[SyntheticBatch] = None,
             topology: Optional[Topology] = None):
    """Metrics of every member on the held-out set.

    Returns:
      (list of E metric dicts, log_probs Tensor of shape (E, B, T, C), E lists of alignments).
    """
    batch = batch if batch is not None else eval_batch(cfg)
    topology = topology if topology is not None else make_topology(cfg)
    device = next(model.parameters()).device
    batch = batch.to(device)
    E = model.num_models
    feats = batch.features.unsqueeze(0).expand(E, -1, -1, -1)
    lengths = batch.lengths.unsqueeze(0).expand(E, -1)
    model.eval()
    with torch.no_grad():
        log_probs = output_log_probs(cfg, model(feats, lengths), lengths, training=False)
    graphs = topology.compile(batch.transcripts)
    metrics, alis = [], []
    for e in range(E):
        m, a = evaluate_log_probs(log_probs[e], batch, topology, cfg.align_transition_scale, graphs=graphs)
        metrics.append(m)
        alis.append(a)
    return metrics, log_probs, alis


def run_group(cfg: RunConfig, seeds: Sequence[int], device="cpu", plot_dir: Optional[str] = None,
              plot_name: str = "run", plot_utterances: int = 2) -> List[RunResult]:
    """Trains and evaluates the seeds of one configuration together (one member each), single-threaded.

    ``RunResult.seconds`` / ``cpu_seconds`` are the group's wall / CPU time
    divided by the number of seeds. With ``plot_dir``, the member of seed 0 (when in ``seeds``) writes
    ``{plot_dir}/{plot_name}_utt{k}.png`` for the first ``plot_utterances``
    held-out utterances (see :func:`fsalign.synthetic.plots.plot_posteriors`).
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    seeds = [int(s) for s in seeds]
    with single_thread():
        topology = make_topology(cfg)
        model, final = train(cfg, seeds, device, topology)
        batch = eval_batch(cfg)
        metrics, log_probs, alis = evaluate(cfg, model, batch=batch, topology=topology)
    if plot_dir is not None and 0 in seeds:
        from fsalign.synthetic.plots import plot_posteriors

        e = seeds.index(0)
        names = ["ε"] + list(cfg.data.alphabet)
        for k in range(min(plot_utterances, len(batch))):
            n = int(batch.lengths[k])
            plot_posteriors(
                log_probs[e, k, :n], batch.alignment[k, :n], alis[e][k].labels,
                f"{plot_dir}/{plot_name}_utt{k}.png", labels=names,
                title=f"{plot_name} (seed 0, held-out utterance {k}): circles true, crosses Viterbi",
            )
    seconds = (time.perf_counter() - start) / len(seeds)
    cpu_seconds = (time.process_time() - cpu_start) / len(seeds)
    return [RunResult(s, m, seconds, f, cpu_seconds) for s, m, f in zip(seeds, metrics, final)]


def run_one(cfg: RunConfig, seed: int, device="cpu") -> RunResult:
    """Trains seed ``seed`` of ``cfg`` and evaluates it on the held-out set."""
    return run_group(cfg, [seed], device)[0]
