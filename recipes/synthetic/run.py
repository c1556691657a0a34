#!/usr/bin/env python3
"""Reproduces a synthetic table of the paper (Tables 1, 10, 11, 12, 13; section 6.1, 7.1.1, A.5).

Trains every row of the table for seeds 0..K-1 and prints ours beside the
paper's numbers (mean ± std over seeds)::

    python recipes/synthetic/run.py --table 10 --seeds 10 --json t10.json --markdown t10.md --plot plots/

Only imports ``fsalign``.
"""
import argparse
import json
import logging
import sys
from pathlib import Path

from fsalign.synthetic.tables import TABLE_IDS, format_markdown, run_table
from fsalign.util import use_fast_mkl_on_amd


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=int, required=True, choices=TABLE_IDS, help="paper table to reproduce")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..K-1 per row (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, one CPU thread each (default 2)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the markdown table here")
    parser.add_argument("--plot", type=Path, help="folder for posterior plots of seed 0 of every row")
    parser.add_argument("--steps", type=int, help="override the training steps of every row (quick runs)")
    parser.add_argument("--eval-size", type=int, help="override the held-out set size of every row")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    use_fast_mkl_on_amd()  # before any matrix product; the workers inherit it
    if args.seeds < 1 or args.workers < 1:
        parser.error(f"--seeds and --workers must be >= 1, got {args.seeds} and {args.workers}")
    overrides = {}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.eval_size is not None:
        overrides["eval_size"] = args.eval_size
    result = run_table(args.table, seeds=args.seeds, workers=args.workers,
                       plot_dir=None if args.plot is None else str(args.plot), device=args.device, **overrides)
    text = format_markdown(result)
    sys.stdout.write(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
