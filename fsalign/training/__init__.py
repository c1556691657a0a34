"""Training: the full-sum criterion, the one training loop, its command line, dev evaluation.

* :mod:`fsalign.training.criterion`: :class:`FullSumCriterion` (eq. 5, 6: topology, scales,
  prior mode) and the recipe's :class:`StagedCriterion` (warm-up, then the criterion);
* :mod:`fsalign.training.loop`: :func:`train_steps` (the optimisation loop every trainer
  runs) and :func:`train` (the Conformer recipe from lhotse cuts);
* :mod:`fsalign.training.args`: the recipe's argument groups and their checks;
* :mod:`fsalign.training.evaluation`: dev loss, LER and TSE under the trained criterion.
"""
from fsalign.training.args import (
    PRIOR_MODES,
    WARMUPS,
    add_arguments,
    check_arguments,
    criterion_scales,
    hmm_loop,
    topology_params,
)
from fsalign.training.criterion import FullSumCriterion, StagedCriterion
from fsalign.training.evaluation import evaluate
from fsalign.training.loop import corpus_log_prior, one_cycle_lr, train, train_steps

__all__ = [
    "PRIOR_MODES",
    "WARMUPS",
    "FullSumCriterion",
    "StagedCriterion",
    "add_arguments",
    "check_arguments",
    "corpus_log_prior",
    "criterion_scales",
    "evaluate",
    "hmm_loop",
    "one_cycle_lr",
    "topology_params",
    "train",
    "train_steps",
]
