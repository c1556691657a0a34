"""Synthetic alignment laboratory (paper section 6.1, 7.1.1, appendix A.5).

Data with a known ground-truth alignment (:mod:`.data`, eq. 26), FFNN/BLSTM
posterior models with perfect initialisation (:mod:`.models`), training runs
with any topology, scales and prior (:mod:`.runner`), and the paper's
Tables 1, 10-13 (:mod:`.tables`, ``recipes/synthetic/run.py``).
"""
from fsalign.synthetic.data import (
    SyntheticBatch,
    SyntheticConfig,
    SyntheticGenerator,
    SyntheticUtterance,
)
from fsalign.synthetic.runner import RunConfig, RunResult, run_group, run_one

__all__ = [
    "SyntheticBatch",
    "SyntheticConfig",
    "SyntheticGenerator",
    "SyntheticUtterance",
    "RunConfig",
    "RunResult",
    "run_group",
    "run_one",
]
