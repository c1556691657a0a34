"""The synthetic tables of the paper (Tables 1, 10, 11, 12, 13) and their reproduction.

Every table is a list of :class:`TableRow`: a :class:`RunConfig` plus the
paper's numbers (mean, std over 10 seeds; None where the text of the paper
lost them). :func:`run_table` trains all rows for the given seeds (rows and
seed groups spread over worker processes), and returns the JSON structure
that ``recipes/synthetic/run.py`` writes::

    {"table": N, "rows": [{"config": {...}, "metrics": {"ler": [mean, std], "fw_ce": ...,
      "blank_posterior": ..., "tse": ...}, "paper": {...}, "per_seed": [...]}], ...}

Training settings the paper does not give (chosen here, see
``recipes/synthetic/RESULTS.md``): Adam, learning rate, steps, batch size of
the FFNN tables, the HMM loop probabilities (estimated from the ground truth
of the data, :func:`fsalign.synthetic.graphs.estimate_loop_probabilities`).
"""
import logging
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from fsalign.errors import FsalignError
from fsalign.synthetic.data import SyntheticConfig
from fsalign.synthetic.runner import METRICS, RunConfig, RunResult, run_group

__all__ = ["TableRow", "TABLE_IDS", "table_rows", "run_table", "run_jobs", "summarize", "format_markdown",
           "config_json"]

logger = logging.getLogger(__name__)

TABLE_IDS = (1, 10, 11, 12, 13)

PaperValue = Optional[Tuple[float, float]]

# ---------------------------------------------------------------------- training settings
# FFNN (Tables 10, 13): batch 10 (the paper: "higher batch size 100" only for the BLSTM tables)
FFNN_TRAIN = dict(model="ffnn", batch_size=10, steps=1000, learning_rate=0.01)
# BLSTM (Tables 1, 11, 12): batch 100 as in the paper; steps limited by the 15-minute budget per table
BLSTM_TRAIN = dict(model="blstm", batch_size=100, steps=250, learning_rate=0.02)
TABLE12_STEPS = 200  # the 100-unit BLSTM costs ~6x the 20-unit one per step

# ---------------------------------------------------------------------- data of the tables
HIGH_FRAMERATE = SyntheticConfig(num_words=1, repetitions=10, silence_factor=1.0)  # Table 10
NOISY = SyntheticConfig(num_words=(1, 3), repetitions=2, silence_factor=0.3, noise_scale=0.5)  # Tables 1, 11, 12


@dataclass(frozen=True)
class TableRow:
    """One row of a paper table.

    Attributes:
      label: short description shown in the markdown table.
      config: the run configuration.
      paper: the paper's (mean, std) per metric, None where unknown.
      extra: further columns of the paper's table (e.g. the data columns of Table 13).
    """

    label: str
    config: RunConfig
    paper: Dict[str, PaperValue]
    extra: Dict[str, Any] = field(default_factory=dict)


def _paper(ler, fw_ce, blank, tse) -> Dict[str, PaperValue]:
    return {"ler": ler, "fw_ce": fw_ce, "blank_posterior": blank, "tse": tse}


def _table10() -> List[TableRow]:
    base = dict(data=HIGH_FRAMERATE, topology="hmm", transition_scale=0.0, **FFNN_TRAIN)
    avg = dict(prior="seq", **base)
    rows = [
        ("posterior avg., stop grad, β=0.5, α=0.5", dict(avg, stop_grad=True, prior_scale=0.5, posterior_scale=0.5),
         _paper((0.0, 0.0), (0.00, 0.00), (50, 0), (0.0, 0.0))),
        ("posterior avg., stop grad, β=1.0, α=1.0", dict(avg, stop_grad=True, prior_scale=1.0, posterior_scale=1.0),
         _paper((0.5, 1.1), (0.05, 0.10), (50, 0), (0.1, 0.2))),
        ("posterior avg., no stop grad, β=0.5, α=0.5",
         dict(avg, stop_grad=False, prior_scale=0.5, posterior_scale=0.5),
         _paper((33.8, 26.0), (1.79, 1.94), (45, 15), (0.4, 1.2))),
        ("static, β=0.5, α=0.5", dict(base, prior="static", prior_scale=0.5, posterior_scale=0.5),
         _paper((108.2, 10.1), (11.39, 0.74), (0, 0), (19.5, 0.0))),
        ("static, β=0.1, α=0.5", dict(base, prior="static", prior_scale=0.1, posterior_scale=0.5),
         _paper((8.7, 20.8), (0.39, 0.86), (52, 3), (0.6, 1.2))),
        ("static, β=0.03, α=0.1", dict(base, prior="static", prior_scale=0.03, posterior_scale=0.1),
         _paper((11.8, 11.0), (0.28, 0.11), (50, 8), (0.9, 1.4))),
        ("no prior, α=0.5", dict(base, posterior_scale=0.5),
         _paper((36.9, 25.3), (2.19, 1.78), (64, 13), (5.7, 5.1))),
        ("no prior, α=1.0", dict(base, posterior_scale=1.0),
         _paper((65.9, 32.0), (5.28, 4.26), (68, 27), (11.2, 5.5))),
    ]
    return [TableRow(label, RunConfig(**kw), paper) for label, kw, paper in rows]


# (α, β, γ) -> paper values; Table 11 (Table 1 is a subset)
_T11 = [
    ((0.5, 0.5, 0.0), _paper((10.5, 5.2), (0.54, 0.09), None, None)),  # the paper's text lost E p(ε) std and TSE
    ((0.5, 0.2, 0.0), _paper((5.9, 4.7), (0.51, 0.06), (23, 4), (0.3, 0.1))),
    ((0.5, 0.5, 0.1), _paper((9.4, 5.8), (0.55, 0.05), (15, 3), (0.3, 0.1))),
    ((0.5, 0.5, 0.2), _paper((7.7, 5.4), (0.52, 0.05), (16, 2), (0.3, 0.0))),
    ((0.5, 0.5, 0.3), _paper((7.8, 5.7), (0.53, 0.08), (15, 3), (0.3, 0.1))),
    ((0.5, 0.3, 0.2), _paper((4.7, 4.4), (0.50, 0.10), (18, 4), (0.3, 0.1))),
    ((0.5, 0.0, 0.5), _paper((5.0, 5.0), (0.45, 0.06), (20, 3), (0.2, 0.1))),
    ((0.5, 0.0, 0.2), _paper((7.8, 9.7), (0.52, 0.15), (24, 2), (0.3, 0.2))),
    ((0.5, 0.0, 0.1), _paper((7.2, 5.0), (0.57, 0.08), (26, 4), (0.4, 0.1))),
    ((0.5, 0.0, 0.0), _paper((6.7, 6.5), (0.60, 0.13), (30, 3), (0.5, 0.1))),
    ((1.0, 0.0, 0.0), _paper((63.7, 14.3), (3.57, 0.63), (11, 20), (1.3, 0.3))),
]
_T1_SCALES = [(0.5, 0.2, 0.0), (0.5, 0.3, 0.2), (0.5, 0.0, 0.5), (0.5, 0.0, 0.0), (1.0, 0.0, 0.0)]


def _scales_row(alpha: float, beta: float, gamma: float, paper) -> TableRow:
    prior = dict(prior="seq", stop_grad=True) if beta > 0 else dict(prior="none")
    cfg = RunConfig(data=NOISY, topology="hmm", hidden=20, posterior_scale=alpha, prior_scale=beta,
                    transition_scale=gamma, **prior, **BLSTM_TRAIN)
    return TableRow(f"α={alpha}, β={beta}, γ={gamma}", cfg, paper)


def _table11() -> List[TableRow]:
    return [_scales_row(*scales, paper) for scales, paper in _T11]


def _table1() -> List[TableRow]:
    paper = dict(_T11)
    return [_scales_row(*scales, paper[scales]) for scales in _T1_SCALES]


def _table12() -> List[TableRow]:
    rows = [
        (20, "hmm", _paper((63.7, 14.3), (3.57, 0.63), (11, 20), (1.3, 0.3))),
        (20, "ctc", _paper((14.2, 8.2), (0.41, 0.07), (39, 4), (1.3, 0.5))),
        (100, "hmm", _paper((14.8, 9.7), (2.04, 0.56), (41, 7), (1.1, 0.1))),
        (100, "ctc", _paper((5.5, 4.7), (0.21, 0.05), (29, 3), (0.5, 0.6))),
    ]
    return [
        TableRow(f"BLSTM {hidden}, {topo.upper()}",
                 RunConfig(data=NOISY, topology=topo, hidden=hidden, posterior_scale=1.0,
                           **dict(BLSTM_TRAIN, steps=TABLE12_STEPS)), paper)
        for hidden, topo, paper in rows
    ]


def _table13() -> List[TableRow]:
    def data(reps: int, factor: float) -> SyntheticConfig:
        return SyntheticConfig(num_words=1, repetitions=reps, silence_factor=factor)

    base = dict(topology="hmm", transition_scale=0.0, **FFNN_TRAIN)
    rows = [
        (10, 1.0, 50, 0.5, 0.5, _paper((0.0, 0.0), (0.00, 0.00), (50, 0), (0.0, 0.0))),
        (10, 0.2, 17, 0.5, 0.5, _paper((0.0, 0.0), (0.00, 0.00), (17, 0), (0.0, 0.0))),
        (10, 0.2, 17, 0.0, 1.0, _paper((45.6, 29.2), (4.90, 4.01), (51, 26), (7.9, 6.0))),
        (2, 0.14, 14, 0.5, 0.5, _paper((1.5, 3.2), (0.09, 0.05), (15, 3), (0.0, 0.0))),
        (2, 0.14, 14, 0.0, 1.0, _paper((0.0, 0.0), (0.00, 0.00), (14, 0), (0.0, 0.0))),
        (2, 0.5, 19, 0.0, 1.0, _paper((0.0, 0.0), (0.00, 0.00), (19, 0), (0.0, 0.0))),
    ]
    out = []
    for reps, factor, ratio, beta, alpha, paper in rows:
        prior = dict(prior="seq", stop_grad=True) if beta > 0 else dict(prior="none")
        cfg = RunConfig(data=data(reps, factor), posterior_scale=alpha, prior_scale=beta, **prior, **base)
        out.append(TableRow(
            f"{reps} frames/label, r_sil={factor}, β={beta}, α={alpha}", cfg, paper,
            extra={"frames_per_label": reps, "silence_factor": factor, "paper_silence_ratio": ratio},
        ))
    return out


_TABLES = {1: _table1, 10: _table10, 11: _table11, 12: _table12, 13: _table13}


def table_rows(table: int, **overrides) -> List[TableRow]:
    """The rows of a paper table; ``overrides`` replace RunConfig fields in every row (e.g. steps=50)."""
    if table not in _TABLES:
        raise FsalignError(f"table must be one of {TABLE_IDS}, got {table}")
    rows = _TABLES[table]()
    if overrides:
        rows = [replace(r, config=replace(r.config, **overrides)) for r in rows]
    return rows


def config_json(cfg: RunConfig) -> Dict[str, Any]:
    """The ``config`` entry of the JSON output: the table's columns first, then everything else."""
    d = {
        "model": cfg.model,
        "topology": cfg.topology,
        "prior": cfg.prior,
        "stop_grad": cfg.stop_grad,
        "prior_scale": cfg.prior_scale,
        "posterior_scale": cfg.posterior_scale,
        "transition_scale": cfg.transition_scale,
    }
    rest = cfg.to_dict()
    for k in list(d):
        rest.pop(k, None)
    d.update(rest)
    return d


# ---------------------------------------------------------------------- running
def _worker_init() -> None:
    torch.set_num_threads(1)


def _run_job(job: Tuple[Dict[str, Any], List[int], Optional[str], str, str]) -> List[Dict[str, Any]]:
    cfg_dict, seeds, plot_dir, plot_name, device = job
    results = run_group(RunConfig.from_dict(cfg_dict), seeds, device=device, plot_dir=plot_dir, plot_name=plot_name)
    return [asdict(r) for r in results]


def run_jobs(
    jobs: Sequence[Tuple[RunConfig, Sequence[int]]],
    workers: int = 1,
    plot_dir: Optional[str] = None,
    plot_names: Optional[Sequence[str]] = None,
    device: str = "cpu",
) -> List[List[RunResult]]:
    """Runs (config, seeds) jobs, in ``workers`` spawned processes (one torch thread each) if > 1.

    Returns:
      Per job, one :class:`RunResult` per seed.
    """
    names = list(plot_names) if plot_names is not None else [f"job{i}" for i in range(len(jobs))]
    payload = [(cfg.to_dict(), [int(s) for s in seeds], plot_dir, name, str(device))
               for (cfg, seeds), name in zip(jobs, names)]
    if workers <= 1:
        out = [_run_job(p) for p in payload]
    else:
        # the costliest jobs first, so that the last ones to finish are short
        order = sorted(range(len(payload)), key=lambda i: -_cost(jobs[i][0]) * len(jobs[i][1]))
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_init) as pool:
            done = pool.map(_run_job, [payload[i] for i in order], chunksize=1)
        out = [None] * len(payload)
        for i, res in zip(order, done):
            out[i] = res
    return [[RunResult(**d) for d in job] for job in out]


def _cost(cfg: RunConfig) -> float:
    """Rough relative cost of one seed of a configuration (for scheduling only)."""
    per_step = cfg.batch_size * (cfg.hidden / 20.0 * 8.0 if cfg.model == "blstm" else 0.2)
    return per_step * cfg.steps


def summarize(results: Sequence[RunResult]) -> Dict[str, List[float]]:
    """``{metric: [mean, std]}`` over seeds (population std, ddof 0)."""
    out = {}
    for m in METRICS:
        vals = np.asarray([r.metrics[m] for r in results], np.float64)
        out[m] = [float(vals.mean()), float(vals.std())]
    return out


def run_table(
    table: int,
    seeds: int = 10,
    workers: int = 2,
    plot_dir: Optional[str] = None,
    device: str = "cpu",
    **overrides,
) -> Dict[str, Any]:
    """Trains and evaluates every row of a table for seeds 0..seeds-1.

    The seeds of a row are split into ``workers`` groups (one model member per
    seed, see :mod:`fsalign.models.synthetic`); groups of all rows are spread
    over ``workers`` processes.

    Returns:
      The JSON structure described in the module docstring, plus ``seconds``
      (wall time of the whole table).
    """
    rows = table_rows(table, **overrides)
    seed_list = list(range(int(seeds)))
    chunks = max(1, min(int(workers), len(seed_list)))
    groups = [seed_list[i::chunks] for i in range(chunks)]
    groups = [g for g in groups if g]
    jobs, names, owner = [], [], []
    for r, row in enumerate(rows):
        for g in groups:
            jobs.append((row.config, g))
            names.append(f"table{table}_row{r + 1}")
            owner.append(r)
    start = time.perf_counter()
    results = run_jobs(jobs, workers=workers, plot_dir=plot_dir, plot_names=names, device=device)
    seconds = time.perf_counter() - start
    per_row: List[List[RunResult]] = [[] for _ in rows]
    for r, res in zip(owner, results):
        per_row[r].extend(res)
    out_rows = []
    for row, res in zip(rows, per_row):
        res = sorted(res, key=lambda x: x.seed)
        out_rows.append({
            "label": row.label,
            "config": config_json(row.config),
            "metrics": summarize(res),
            "paper": {k: (list(v) if v is not None else None) for k, v in row.paper.items()},
            "extra": dict(row.extra),
            "per_seed": [{"seed": x.seed, **x.metrics, "final_loss": x.final_loss, "cpu_seconds": x.cpu_seconds}
                         for x in res],
        })
    cpu = sum(r.cpu_seconds for res in results for r in res)
    return {"table": int(table), "seeds": len(seed_list), "workers": int(workers), "seconds": seconds,
            "cpu_seconds": cpu, "load_average": _load_average(), "rows": out_rows}


def _load_average() -> Optional[List[float]]:
    """The machine's 1/5/15-minute load averages at the end of the run (other users' jobs slow ours)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------- markdown
_FMT = {"ler": "{:.1f}", "fw_ce": "{:.2f}", "blank_posterior": "{:.0f}", "tse": "{:.1f}"}
_HEAD = {"ler": "LER [%]", "fw_ce": "Fw. CE", "blank_posterior": "E p(ε|x) [%]", "tse": "TSE [frames]"}


def _pair(metric: str, value) -> str:
    if value is None:
        return "n/a"
    fmt = _FMT[metric]
    mean, std = value
    return f"{fmt.format(mean)} ± {fmt.format(std)}"


def format_markdown(result: Dict[str, Any]) -> str:
    """A markdown table: per row and metric, ours (mean ± std) and the paper's."""
    cols = ["#", "configuration"]
    for m in METRICS:
        cols += [f"{_HEAD[m]} ours", "paper"]
    cpu = result.get("cpu_seconds")
    load = result.get("load_average")
    lines = [
        f"Table {result['table']}: {result['seeds']} seeds, {result['seconds']:.0f} s wall time "
        f"with {result['workers']} worker(s)"
        + (f", {cpu:.0f} CPU-seconds in all" if cpu is not None else "")
        + (f", load average {load[0]}/{load[1]}/{load[2]} at the end" if load else "") + ".",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for i, row in enumerate(result["rows"], 1):
        cells = [str(i), row["label"]]
        for m in METRICS:
            cells += [_pair(m, row["metrics"][m]), _pair(m, row["paper"].get(m))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
