r"""``fsalign synth``: train and evaluate one synthetic configuration (section 6.1) over seeds.

A thin click command: parse the flags into a :class:`RunConfig`, run
:func:`fsalign.synthetic.tables.run_jobs`, print mean ± std per metric and
optionally write the same JSON structure as ``recipes/synthetic/run.py``
(one row). Example::

    fsalign synth --model blstm --topology hmm --noise 0.5 --num-words 1 3 --repetitions 2 2 \
        --silence-factor 0.3 0.3 --posterior-scale 0.5 --prior seq --prior-scale 0.3 \
        --transition-scale 0.2 --batch-size 100 --steps 250 --seeds 10 --json out.json
"""
import json
from pathlib import Path

import click

__all__ = ["synth"]


def _optional_bool(value: str):
    return {"yes": True, "no": False, "auto": None}[value]


@click.command("synth")
@click.option("--model", type=click.Choice(["ffnn", "blstm"]), default="ffnn", show_default=True)
@click.option("--hidden", type=int, default=20, show_default=True, help="BLSTM units per direction")
@click.option("--layers", type=int, default=2, show_default=True, help="BLSTM layers")
@click.option("--init", type=click.Choice(["default", "perfect"]), default="default", show_default=True)
@click.option("--topology", type=click.Choice(["hmm", "ctc"]), default="hmm", show_default=True)
@click.option("--posterior-scale", "alpha", type=float, default=1.0, show_default=True, help="α of eq. 6")
@click.option("--prior-scale", "beta", type=float, default=0.0, show_default=True, help="β of eq. 6")
@click.option("--transition-scale", "gamma", type=float, default=0.0, show_default=True, help="γ of eq. 6")
@click.option("--prior", type=click.Choice(["none", "static", "seq", "batch", "posterior_avg"]), default="none",
              show_default=True, help="prior mode: static (ground-truth label frequencies), seq / batch (average "
                                      "posterior of the sequence / the batch); posterior_avg: the former spelling "
                                      "of seq / batch, chosen by --prior-scope")
@click.option("--stop-grad", type=click.Choice(["yes", "no", "auto"]), default="auto", show_default=True,
              help="seq / batch priors only (auto: yes)")
@click.option("--prior-scope", type=click.Choice(["sequence", "batch"]), default="sequence", show_default=True,
              help="with --prior posterior_avg only")
@click.option("--label-loop", type=float, default=None, help="HMM token loop probability (default: estimated)")
@click.option("--silence-loop", type=float, default=None, help="HMM silence loop probability (default: estimated)")
@click.option("--normed-grad/--no-normed-grad", default=False, show_default=True, help="eq. 11")
@click.option("--normed-grad-scope", type=click.Choice(["batch", "seq"]), default="batch", show_default=True)
@click.option("--blank-separation/--no-blank-separation", default=False, show_default=True, help="eq. 15-17")
@click.option("--words", default="helo,world,howe,are,you", show_default=True, help="comma-separated words")
@click.option("--num-words", type=int, nargs=2, default=(1, 1), show_default=True, help="min max")
@click.option("--repetitions", type=int, nargs=2, default=(10, 10), show_default=True, help="min max")
@click.option("--silence-factor", type=float, nargs=2, default=(1.0, 1.0), show_default=True, help="min max")
@click.option("--silence-placement", type=click.Choice(["even", "random"]), default="even", show_default=True)
@click.option("--noise", type=float, default=0.0, show_default=True, help="σ_ξ of eq. 26")
@click.option("--batch-size", type=int, default=10, show_default=True)
@click.option("--steps", type=int, default=1000, show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True, help="Adam learning rate")
@click.option("--eval-size", type=int, default=200, show_default=True)
@click.option("--seeds", type=int, default=10, show_default=True, help="seeds 0..K-1")
@click.option("--workers", type=int, default=2, show_default=True, help="processes, one CPU thread each")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="folder for posterior plots of seed 0")
def synth(model, hidden, layers, init, topology, alpha, beta, gamma, prior, stop_grad, prior_scope, label_loop,
          silence_loop, normed_grad, normed_grad_scope, blank_separation, words, num_words, repetitions,
          silence_factor, silence_placement, noise, batch_size, steps, lr, eval_size, seeds, workers, device,
          json_path, plot_dir):
    """Train one synthetic configuration over seeds and print LER, Fw. CE, E p(ε|x), TSE."""
    from fsalign.errors import FsalignError
    from fsalign.synthetic.data import SyntheticConfig
    from fsalign.synthetic.runner import METRICS, RunConfig
    from fsalign.synthetic.tables import config_json, run_jobs, summarize
    from fsalign.util import use_fast_mkl_on_amd

    use_fast_mkl_on_amd()
    try:
        data = SyntheticConfig(
            words=tuple(w for w in words.split(",") if w), num_words=num_words, repetitions=repetitions,
            silence_factor=silence_factor, noise_scale=noise, silence_placement=silence_placement,
        )
        cfg = RunConfig(
            data=data, model=model, hidden=hidden, num_layers=layers, init=init, topology=topology,
            posterior_scale=alpha, prior_scale=beta, transition_scale=gamma, prior=prior,
            stop_grad=_optional_bool(stop_grad) if prior in ("seq", "batch", "posterior_avg") else None,
            prior_scope=prior_scope if prior == "posterior_avg" else None,
            label_loop=label_loop, silence_loop=silence_loop, normed_grad=normed_grad,
            normed_grad_scope=normed_grad_scope, blank_separation=blank_separation, batch_size=batch_size,
            steps=steps, learning_rate=lr, eval_size=eval_size,
        )
    except FsalignError as e:
        raise click.UsageError(str(e)) from e
    if seeds < 1 or workers < 1:
        raise click.UsageError(f"--seeds and --workers must be >= 1, got {seeds} and {workers}")
    groups = [g for g in (list(range(seeds))[i::workers] for i in range(workers)) if g]
    results = run_jobs([(cfg, g) for g in groups], workers=min(workers, len(groups)),
                       plot_dir=None if plot_dir is None else str(plot_dir), plot_names=["synth"] * len(groups),
                       device=device)
    flat = sorted((r for group in results for r in group), key=lambda r: r.seed)
    summary = summarize(flat)
    for m in METRICS:
        mean, std = summary[m]
        click.echo(f"{m:16s} {mean:8.3f} ± {std:.3f}")
    if json_path is not None:
        row = {"config": config_json(cfg), "metrics": summary,
               "per_seed": [{"seed": r.seed, **r.metrics, "final_loss": r.final_loss} for r in flat]}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"table": None, "rows": [row]}, indent=1) + "\n")
