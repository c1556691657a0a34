"""Results: alignment spans and their times, metrics (A.4.2), alignment file formats, comparisons.

The bottom floor of fsalign (above :mod:`fsalign.util`): it knows nothing of models, scores
or the engine, only of frames, spans, seconds and files.
"""
from fsalign.results.alignment import (
    Alignment,
    TokenSpan,
    WordSpan,
    frame_time_offset,
    spans_from_path,
)
from fsalign.results.compare import AlignmentComparison, SideStats, compare_alignments
from fsalign.results.confidence import LOW_CONFIDENCE, roc_auc, span_confidences, substitute_words
from fsalign.results.formats import (
    alignment_format,
    format_ctm,
    read_alignments,
    read_ctm,
    read_textgrid,
    read_utterances,
    write_ctm,
    write_textgrid,
)
from fsalign.results.manifests import cut_spans, cut_with_alignment
from fsalign.results.times import (
    SILENCE_LABELS,
    TimedSpan,
    UtteranceTimes,
    is_silence,
    words_only,
)

__all__ = [
    "Alignment",
    "AlignmentComparison",
    "LOW_CONFIDENCE",
    "SILENCE_LABELS",
    "SideStats",
    "TimedSpan",
    "TokenSpan",
    "UtteranceTimes",
    "WordSpan",
    "alignment_format",
    "compare_alignments",
    "cut_spans",
    "cut_with_alignment",
    "format_ctm",
    "frame_time_offset",
    "is_silence",
    "read_alignments",
    "read_ctm",
    "read_textgrid",
    "read_utterances",
    "roc_auc",
    "span_confidences",
    "spans_from_path",
    "substitute_words",
    "words_only",
    "write_ctm",
    "write_textgrid",
]
