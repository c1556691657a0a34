"""The training recipe's command line: argument groups, their checks, and the criterion they define.

:func:`add_arguments` adds the model, criterion, optimizer, data and run groups to a parser
(icefall style: ``recipes/librispeech/train.py`` and ``fsalign align-corpus`` share them);
:func:`check_arguments` validates every value before any data is read, with a one-line error
naming the option, the value and the valid range; :func:`criterion_scales` resolves the
per-topology defaults of the criterion and the warm-up.
"""
import argparse
from typing import Any, Dict

from fsalign.engine.builtin import TOPOLOGIES
from fsalign.models.conformer import PRESETS
from fsalign.scores.priors import PRIOR_MODES
from fsalign.util import check_option, is_finite_number

__all__ = ["PRIOR_MODES", "WARMUPS", "add_arguments", "check_arguments", "criterion_scales", "hmm_loop",
           "topology_params"]

WARMUPS = ("prior", "ctc", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the model, criterion, optimizer, data and run argument groups (icefall style)."""
    g = parser.add_argument_group("model")
    g.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="encoder size: tiny is the CPU recipe, large the paper's 12-layer encoder")
    g.add_argument("--subsampling", type=int, choices=(2, 4, 6), default=4,
                   help="frontend subsampling factor (2: 20 ms frames, 4: 40 ms, 6: 60 ms)")
    g.add_argument("--dropout", type=float, default=0.1, help="dropout of the encoder")
    g.add_argument("--blank-sep", action="store_true", help="blank-separated output head (eq. 15-17)")
    g.add_argument("--aed-layers", type=int, default=0, help="auxiliary AED decoder layers (0: none)")
    g.add_argument("--spec-augment", action=argparse.BooleanOptionalAction, default=False,
                   help="SpecAugment (off for the shipped 20-minute corpus; on for real corpora)")
    g = parser.add_argument_group("criterion")
    g.add_argument("--topology", choices=TOPOLOGIES, default="ctc", help="label topology")
    g.add_argument("--posterior-scale", type=float, default=None, help="alpha; None: 0.7 for hmm, else 1.0")
    g.add_argument("--prior-scale", type=float, default=0.0, help="beta (needs a --prior mode)")
    g.add_argument("--prior", choices=PRIOR_MODES, default="none", help="the prior beta multiplies")
    g.add_argument("--prior-grad", action="store_true", help="let gradients flow through seq/batch priors")
    g.add_argument("--transition-scale", type=float, default=None, help="gamma; None: 0.3 for hmm, else 1.0")
    g.add_argument("--label-loop", type=float, default=None,
                   help="token self-loop probability; None: 0.5 for hmm at 40 ms frames (0.75 at 20 ms), "
                        "no transition model otherwise")
    g.add_argument("--silence-loop", type=float, default=None,
                   help="silence/blank self-loop probability; None: 0.96 for hmm at 40 ms frames (0.98 at 20 ms), "
                        "none otherwise")
    g.add_argument("--normed-grad", action="store_true", help="normalized gradient (eq. 11)")
    g.add_argument("--aed-scale", type=float, default=0.3, help="weight of the auxiliary AED loss")
    g.add_argument("--warmup", choices=WARMUPS, default="prior",
                   help="hmm only: the warm-up stage: prior: the HMM with a sequence prior and "
                        "the --warmup-*-scale scales; ctc: plain CTC; none")
    g.add_argument("--warmup-epochs", type=int, default=None,
                   help="hmm only: warm-up epochs; None: (epochs + 1) // 3 (ctc: at least, see --warmup-max-ler)")
    g.add_argument("--warmup-posterior-scale", type=float, default=0.5, help="alpha of the prior warm-up")
    g.add_argument("--warmup-transition-scale", type=float, default=0.2, help="gamma of the prior warm-up")
    g.add_argument("--warmup-prior-scale", type=float, default=None,
                   help="beta of the prior warm-up (sequence prior, stop-gradient); None: 0.3 "
                        "(0.6 at 20 ms frames, where the HMM did not learn to align after a 0.3 warm-up)")
    g.add_argument("--ctc-warmup-epochs", type=int, default=None,
                   help="hmm only: same as --warmup ctc --warmup-epochs N")
    g.add_argument("--warmup-max-ler", type=float, default=0.5,
                   help="hmm, --warmup ctc: extend the CTC warm-up, one epoch at a time up to 2/3 of --epochs, "
                        "while the dev greedy LER is above this")
    g = parser.add_argument_group("optimizer")
    g.add_argument("--epochs", type=int, default=30, help="training epochs")
    g.add_argument("--peak-lr", type=float, default=3e-3, help="peak of the one-cycle learning rate")
    g.add_argument("--final-lr", type=float, default=1e-6, help="learning rate at the end")
    g.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay")
    g.add_argument("--grad-clip", type=float, default=5.0, help="gradient norm clipping")
    g = parser.add_argument_group("data")
    g.add_argument("--max-duration", type=float, default=30.0, help="seconds of audio per batch (per rank)")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=int, default=42, help="random seed")
    g.add_argument("--resume", action="store_true", help="continue from EXP/last.pt")
    g.add_argument("--device", default=None, help="torch device; None: cuda:LOCAL_RANK if available, else cpu")
    g.add_argument("--no-progress", action="store_true", help="no tqdm bars")


def hmm_loop(loop_at_40ms: float, subsampling: int) -> float:
    """The loop probability with the expected duration in seconds of ``loop_at_40ms`` at 40 ms frames.

    A state with loop ``p`` lasts ``1 / (1 - p)`` frames on average, so at ``subsampling * 10`` ms
    frames the same duration needs ``1 - (1 - p) * subsampling / 4`` (0.5 at 40 ms: 0.75 at 20 ms),
    the paper's reasoning for 0.5 (80 ms phonemes at 40 ms frames, section 5).
    """
    return max(0.0, 1.0 - (1.0 - loop_at_40ms) * subsampling / 4)


def topology_params(args: argparse.Namespace) -> Dict[str, Any]:
    """Keyword arguments of the topology class from ``--label-loop``/``--silence-loop``.

    The HMM's defaults are the paper's 0.5 and 0.96 (Table 9) at 40 ms frames, and the same
    expected durations at the frame rate of ``--subsampling`` (:func:`hmm_loop`).
    """
    if args.topology == "hmm":
        factor = getattr(args, "subsampling", 4)
        return {"label_loop": hmm_loop(0.5, factor) if args.label_loop is None else args.label_loop,
                "silence_loop": hmm_loop(0.96, factor) if args.silence_loop is None else args.silence_loop}
    return {"label_loop": args.label_loop, "blank_loop": args.silence_loop}


def _warmup_prior_scale(args: argparse.Namespace) -> float:
    # measured at 20 ms frames: after a 0.3 warm-up the dev word boundaries stayed ~800 ms off; 0.6 trains
    if args.warmup_prior_scale is not None:
        return args.warmup_prior_scale
    return 0.6 if getattr(args, "subsampling", 4) <= 2 else 0.3


def criterion_scales(args: argparse.Namespace) -> Dict[str, Any]:
    """α, β, γ, prior mode and the warm-up stage with the per-topology defaults filled in."""
    hmm = args.topology == "hmm"
    check_option("--prior-scale", args.prior_scale, not (args.prior_scale and args.prior == "none"),
                 "0 with --prior none (choose a --prior mode)")
    warmup, epochs = args.warmup, args.warmup_epochs
    if args.ctc_warmup_epochs is not None:  # the older spelling of --warmup ctc --warmup-epochs N
        warmup, epochs = "ctc", args.ctc_warmup_epochs
    if not hmm or warmup == "none":
        warmup, epochs = "none", 0
    elif epochs is None:
        epochs = (args.epochs + 1) // 3
    check_option("--warmup-epochs", epochs, not hmm or 0 <= epochs < args.epochs,
                 f"in [0, --epochs={args.epochs}) so that the HMM trains")
    if epochs == 0:
        warmup = "none"
    return {
        "posterior_scale": (0.7 if hmm else 1.0) if args.posterior_scale is None else args.posterior_scale,
        "transition_scale": (0.3 if hmm else 1.0) if args.transition_scale is None else args.transition_scale,
        "prior_scale": args.prior_scale, "prior": args.prior, "prior_grad": args.prior_grad,
        "warmup": warmup, "warmup_epochs": epochs,
        "warmup_scales": {"posterior_scale": args.warmup_posterior_scale,
                          "transition_scale": args.warmup_transition_scale, "prior_scale": _warmup_prior_scale(args)},
        "max_warmup_epochs": max(epochs, min(2 * args.epochs // 3, args.epochs - 1)) if warmup == "ctc" else epochs,
        "warmup_max_ler": args.warmup_max_ler,
    }  # fmt: skip


def _probability(value) -> bool:
    return value is None or (is_finite_number(value) and 0.0 < value < 1.0)


def check_arguments(args: argparse.Namespace) -> None:
    """Checks every training option of :func:`add_arguments` before any work starts.

    Raises:
      FsalignError: naming the first option whose value is outside its range.
    """
    def positive_int(name: str, value) -> None:
        check_option(name, value, isinstance(value, int) and value >= 1, "an integer >= 1")

    positive_int("--epochs", args.epochs)
    for name in ("peak_lr", "final_lr", "max_duration"):
        value = getattr(args, name)
        check_option("--" + name.replace("_", "-"), value, is_finite_number(value) and value > 0, "a number > 0")
    for name in ("weight_decay", "grad_clip", "aed_scale", "dropout", "prior_scale", "warmup_posterior_scale",
                 "warmup_transition_scale"):
        value = getattr(args, name)
        check_option("--" + name.replace("_", "-"), value, is_finite_number(value) and value >= 0, "a number >= 0")
    check_option("--dropout", args.dropout, args.dropout < 1, "in [0, 1)")
    for name in ("posterior_scale", "transition_scale", "warmup_prior_scale"):
        value = getattr(args, name)
        check_option("--" + name.replace("_", "-"), value, value is None or (is_finite_number(value) and value >= 0),
                     "a number >= 0")
    for name in ("label_loop", "silence_loop"):
        check_option("--" + name.replace("_", "-"), getattr(args, name), _probability(getattr(args, name)),
                     "a probability in (0, 1)")
    check_option("--aed-layers", args.aed_layers, isinstance(args.aed_layers, int) and args.aed_layers >= 0,
                 "an integer >= 0")
    check_option("--num-workers", args.num_workers, args.num_workers >= 0, "an integer >= 0")
    check_option("--warmup-max-ler", args.warmup_max_ler,
                 is_finite_number(args.warmup_max_ler) and args.warmup_max_ler >= 0, "a number >= 0")
    check_option("--prior-scale", args.prior_scale, not (args.prior_scale and args.prior == "none"),
                 "0 with --prior none (choose a --prior mode)")
    criterion_scales(args)  # the warm-up epochs against --epochs
