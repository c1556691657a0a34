"""fsalign: alignment modelling for speech recognition, built on k2.

Every alignment question is a topology FST intersected with a dense score matrix: the
log semiring gives full-sum training and soft alignments, the max semiring Viterbi
alignments. This module is the flat public API; the subpackages follow the data flow:

* :mod:`fsalign.corpus`: corpora -> Lhotse cuts, batches, tokenizers, lexicons;
* :mod:`fsalign.models`: Conformer encoder, output heads, AED decoder, synthetic nets;
* :mod:`fsalign.scores`: score matrices (posteriors, priors, gradient scores);
* :mod:`fsalign.engine`: topologies, training graphs, full sum, Viterbi (k2);
* :mod:`fsalign.results`: alignment spans, seconds, metrics, file formats;
* :mod:`fsalign.training`, :mod:`fsalign.aligning`, :mod:`fsalign.synthetic`: the jobs;
* :mod:`fsalign.cli`: the ``fsalign`` command line.

The engine and the criteria are imported eagerly; the data side (lhotse, sentencepiece)
is imported on first use of its names. Modules of the former flat layout
(``fsalign.topology``, ``fsalign.align``, ...) stay importable under their old names.
"""
import importlib
import importlib.abc
import importlib.util
import sys

from fsalign._compat import check_stack

check_stack()

from fsalign.engine import (  # noqa: E402
    CtcTopology,
    HmmTopology,
    RelaxedTopology,
    Scales,
    Topology,
    TrainingGraphs,
    full_sum_loss,
    full_sum_scores,
    soft_alignment,
    viterbi_align,
)
from fsalign.errors import FsalignError, InfeasibleAlignment  # noqa: E402
from fsalign.results import (  # noqa: E402
    Alignment,
    TokenSpan,
    WordSpan,
    frame_time_offset,
)
from fsalign.scores import (  # noqa: E402
    CorpusPrior,
    GradientScorer,
    PosteriorScorer,
    RunningPrior,
    ScoreMatrix,
    aed_label_log_probs,
    apply_blank_penalty,
    batch_log_prior,
    blank_separated_log_probs,
    ctc_prefix_log_probs,
    estimate_corpus_prior,
    grad_align,
    grad_score_matrix,
    gradient_scores,
    joint_label_log_probs,
    normed_grad_log_softmax,
    prior_from_alignment,
    prior_from_transcripts,
    sequence_log_prior,
)

__version__ = "0.1.0"

_LAZY = {
    "Tokenizer": "fsalign.corpus.tokenizers",
    "CharTokenizer": "fsalign.corpus.tokenizers",
    "SentencePieceTokenizer": "fsalign.corpus.tokenizers",
    "PhoneTokenizer": "fsalign.corpus.tokenizers",
    "read_lexicon": "fsalign.corpus.tokenizers",
    "Batch": "fsalign.corpus.cuts",
    "CutDataset": "fsalign.corpus.cuts",
    "make_dataloader": "fsalign.corpus.cuts",
    "SoftmaxHead": "fsalign.models.heads",
    "BlankSeparatedHead": "fsalign.models.heads",
    "plot_grad_scores": "fsalign.aligning.plot",
    "ConformerModel": "fsalign.models.conformer",
    "ConformerConfig": "fsalign.models.conformer",
    "load_checkpoint": "fsalign.checkpoint",
}

# The former flat layout: old module name -> the module that holds its names now.
_MOVED = {
    "fsalign.topology": "fsalign.engine",
    "fsalign.graphs": "fsalign.engine",
    "fsalign.lattice": "fsalign.engine.lattice",
    "fsalign.fullsum": "fsalign.engine.fullsum",
    "fsalign.viterbi": "fsalign.engine.viterbi",
    "fsalign.alignment": "fsalign.results.alignment",
    "fsalign.metrics": "fsalign.results.metrics",
    "fsalign.formats": "fsalign.results",
    "fsalign.normgrad": "fsalign.scores.normgrad",
    "fsalign.prefix": "fsalign.scores.prefix",
    "fsalign.gradscore": "fsalign.scores",
    "fsalign.prepare": "fsalign.corpus.prepare",
    "fsalign.tokenizers": "fsalign.corpus.tokenizers",
    "fsalign.lexicon": "fsalign.corpus.lexicon",
    "fsalign.evaluation": "fsalign.training.evaluation",
    "fsalign.align": "fsalign.aligning",
    "fsalign.journal": "fsalign.aligning.journal",
    "fsalign.output": "fsalign.aligning.output",
    "fsalign.plot": "fsalign.aligning.plot",
    "fsalign.align_cli": "fsalign.cli.align",
    "fsalign.eval_cli": "fsalign.cli.evaluate",
    "fsalign.synthetic.models": "fsalign.models.synthetic",
    "fsalign.synthetic.lstm": "fsalign.models.lstm",
    "fsalign.synthetic.cli": "fsalign.cli.synth",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes ``import fsalign.<old name>`` give the module of :data:`_MOVED` that holds its names."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module):
        pass


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fsalign' has no attribute {name!r}")


__all__ = [  # by subpackage, as imported above; then the lazily imported names
    "CtcTopology", "HmmTopology", "RelaxedTopology", "Scales", "Topology", "TrainingGraphs",
    "full_sum_loss", "full_sum_scores", "soft_alignment", "viterbi_align",
    "FsalignError", "InfeasibleAlignment",
    "Alignment", "TokenSpan", "WordSpan", "frame_time_offset",
    "CorpusPrior", "GradientScorer", "PosteriorScorer", "RunningPrior", "ScoreMatrix",
    "aed_label_log_probs", "apply_blank_penalty", "batch_log_prior", "blank_separated_log_probs",
    "ctc_prefix_log_probs", "estimate_corpus_prior", "grad_align", "grad_score_matrix", "gradient_scores",
    "joint_label_log_probs", "normed_grad_log_softmax", "prior_from_alignment", "prior_from_transcripts",
    "sequence_log_prior",
    *_LAZY,
]
