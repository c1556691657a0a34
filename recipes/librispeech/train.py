#!/usr/bin/env python3
r"""Train a Conformer with a full-sum criterion on prepared LibriSpeech-layout cuts.

    python recipes/librispeech/train.py --topology hmm --unit phone --data-dir exp/data \
        --train-part train-clean-5 --dev-part dev-clean-2 --exp-dir exp/hmm_phone --epochs 30

Writes EXP/last.pt (every epoch), EXP/best.pt (best dev loss), EXP/eval.json (dev loss,
greedy LER, TSE against the reference word times), EXP/tensorboard. Multi-GPU:
``torchrun --nproc_per_node N recipes/librispeech/train.py ...``. See docs/training.md.
"""
import argparse
import json
import logging

from fsalign.errors import FsalignError
from fsalign.training import add_arguments, train
from fsalign.util import HelpFormatter


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--unit", choices=("spm", "bpe", "char", "phone"), required=True,
                        help="the units: DATA/lang_<unit> made by prepare.py")
    parser.add_argument("--data-dir", required=True, help="output directory of prepare.py")
    parser.add_argument("--train-part", default="train-clean-5", help="part to train on (DATA/cuts_<part>.jsonl.gz)")
    parser.add_argument("--dev-part", default="dev-clean-2", help="part for the dev evaluation and best.pt")
    parser.add_argument("--exp-dir", required=True, help="where checkpoints, eval.json and tensorboard go")
    add_arguments(parser)
    return parser


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = get_parser()
    try:
        metrics = train(parser.parse_args())
    except FsalignError as e:
        parser.exit(1, f"error: {e}\n")
    if metrics:
        print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
