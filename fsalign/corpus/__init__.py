"""Corpora: layouts -> Lhotse cuts, preparation, batches, text normalisation, tokenizers, lexicons and G2P.

Names are imported on first use (lhotse and sentencepiece load only when needed).
"""
import importlib

_LAZY = {
    "Batch": "fsalign.corpus.cuts",
    "CutDataset": "fsalign.corpus.cuts",
    "make_dataloader": "fsalign.corpus.cuts",
    "default_extractor": "fsalign.corpus.cuts",
    "reference_words": "fsalign.corpus.cuts",
    "cut_text": "fsalign.corpus.cuts",
    "FRAME_SHIFT_S": "fsalign.corpus.cuts",
    "SAMPLING_RATE": "fsalign.corpus.cuts",
    "Tokenizer": "fsalign.corpus.tokenizers",
    "CharTokenizer": "fsalign.corpus.tokenizers",
    "SentencePieceTokenizer": "fsalign.corpus.tokenizers",
    "PhoneTokenizer": "fsalign.corpus.tokenizers",
    "read_lexicon": "fsalign.corpus.tokenizers",
    "normalize_words": "fsalign.corpus.tokenizers",
    "G2P": "fsalign.corpus.g2p",
    "normalize": "fsalign.corpus.normalize",
    "spoken_words": "fsalign.corpus.normalize",
    "WrittenWord": "fsalign.corpus.normalize",
    "LoadedCorpus": "fsalign.corpus.layouts",
    "detect_layout": "fsalign.corpus.layouts",
    "load_corpus": "fsalign.corpus.layouts",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
