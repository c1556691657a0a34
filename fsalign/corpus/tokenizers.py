"""Tokenizers: transcript strings <-> word-structured token ids (see :mod:`fsalign.corpus.base_tokenizer`).

Units (``Tokenizer.unit``): ``char`` (letters and apostrophe, :class:`CharTokenizer`), ``spm``
(SentencePiece unigram LM) and ``bpe`` (SentencePiece BPE, :class:`SentencePieceTokenizer`),
``phone`` (a pronunciation lexicon, :class:`~fsalign.corpus.lexicon.PhoneTokenizer`). Text is
normalised the same way everywhere: upper case, words split at whitespace.

A SentencePiece model is embedded in the tokenizer's dict as base64, so a checkpoint carries it.
"""
import base64
import io
import logging
import re
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence

from fsalign.corpus.base_tokenizer import (
    BLANK,
    OOV_POLICIES,
    Tokenizer,
    check_oov_policy,
    format_oov,
    normalize_words,
)
from fsalign.corpus.lexicon import PhoneTokenizer, read_lexicon
from fsalign.errors import FsalignError
from fsalign.util import Pathlike

logger = logging.getLogger(__name__)

__all__ = [
    "BLANK",
    "OOV_POLICIES",
    "Tokenizer",
    "CharTokenizer",
    "SentencePieceTokenizer",
    "PhoneTokenizer",
    "read_lexicon",
    "normalize_words",
]


class CharTokenizer(Tokenizer, kind="char"):
    """One token per character.

    Args:
      symbols: the alphabet (upper case); default ``A``-``Z`` and apostrophe.
      oov: policy for characters outside the alphabet.
    """

    unit = "char"

    def __init__(self, symbols: Optional[Sequence[str]] = None, oov: str = "error"):
        symbols = list(symbols) if symbols is not None else list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
        if any(len(s) != 1 or s.isspace() for s in symbols) or len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be distinct single non-space characters, got {symbols}")
        self.token_names = [BLANK] + symbols
        self._index = {s: i + 1 for i, s in enumerate(symbols)}
        self.oov = check_oov_policy(oov)

    def _oov_items(self, words: List[str]) -> List[str]:
        return sorted({c for w in words for c in w if c not in self._index})

    def _oov_message(self, bad: List[str]) -> str:
        return format_oov(bad, "character(s) outside the alphabet")

    def _encode_words(self, words: List[str]) -> List[List[int]]:
        return [[self._index[c] for c in w] for w in words]

    def to_dict(self) -> dict:
        """JSON-serialisable dict of the alphabet and OOV policy (inverse of ``Tokenizer.from_dict``)."""
        return {"type": self.kind, "symbols": self.token_names[1:], "oov": self.oov}

    @classmethod
    def _from_dict(cls, data: Mapping) -> "CharTokenizer":
        return cls(symbols=data["symbols"], oov=data["oov"])


class SentencePieceTokenizer(Tokenizer, kind="sentencepiece"):
    """SentencePiece subwords (unigram LM -> unit ``spm``, BPE -> unit ``bpe``).

    Piece ``i`` is column ``i``: models made by :meth:`train` reserve piece 0 for
    ``<blk>`` (a control piece that encoding never produces) and piece 1 for ``<unk>``,
    which counts as out of vocabulary. Words keep their structure: the sentence is
    encoded once and split before every piece that starts with ``▁``.

    Args:
      model: serialized SentencePiece model (``ModelProto`` bytes).
      oov: policy for words that contain ``<unk>``.
      sampling_alpha: if set, ``encode`` samples a segmentation (subword
        regularisation; unigram smoothing or BPE dropout with this alpha).
    """

    def __init__(self, model: bytes, oov: str = "error", sampling_alpha: Optional[float] = None):
        import sentencepiece

        self._model = bytes(model)
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=self._model)
        if not self._sp.is_control(0):
            raise FsalignError(
                f"SentencePiece piece 0 must be a control piece reserved for blank, got "
                f"{self._sp.id_to_piece(0)!r}; train the model with SentencePieceTokenizer.train"
            )
        self.token_names = [BLANK] + [self._sp.id_to_piece(i) for i in range(1, self._sp.get_piece_size())]
        self._word_start = [n.startswith("▁") for n in self.token_names]
        self.model_type = self._read_model_type()
        self.unit = {"unigram": "spm", "bpe": "bpe"}.get(self.model_type, self.model_type)
        self.oov = check_oov_policy(oov)
        self.sampling_alpha = sampling_alpha

    def _read_model_type(self) -> str:
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(self._model)
        return sentencepiece_model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type).lower()

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "unigram",
        oov: str = "error",
        character_coverage: float = 1.0,
        num_threads: int = 1,
        clamp: bool = False,
    ) -> "SentencePieceTokenizer":
        """Train a SentencePiece model on transcripts.

        Args:
          texts: training transcripts (normalised like ``encode`` input).
          vocab_size: number of pieces = ``num_labels`` (blank and ``<unk>`` included).
          model_type: ``"unigram"`` (alias ``"spm"``) or ``"bpe"``.
          oov: policy stored in the returned tokenizer.
          character_coverage: fraction of characters the model must cover.
          num_threads: trainer threads.
          clamp: when the text cannot support ``vocab_size`` pieces, train the largest
            vocabulary it supports (with a warning) instead of raising.

        Raises:
          FsalignError: the text cannot support ``vocab_size`` pieces (names the maximum).
        """
        import sentencepiece

        model_type = {"spm": "unigram"}.get(model_type, model_type)
        if model_type not in ("unigram", "bpe"):
            raise ValueError(f"model_type must be 'unigram' (or 'spm') or 'bpe', got {model_type!r}")
        sentences = [" ".join(normalize_words(t)) for t in texts]
        sentences = [s for s in sentences if s]
        if not sentences:
            raise FsalignError("cannot train a SentencePiece model: no non-empty transcripts given")
        buffer = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=buffer, vocab_size=vocab_size,
                model_type=model_type, character_coverage=character_coverage, num_threads=num_threads,
                pad_id=0, pad_piece=BLANK, unk_id=1, bos_id=-1, eos_id=-1,
                normalization_rule_name="identity", minloglevel=2,
            )  # fmt: skip
        except RuntimeError as e:
            limit = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", str(e))
            if limit and clamp and int(limit.group(2)) < vocab_size:
                logger.warning("vocab size %d is too large for %d training transcripts (%s); using %s",
                               vocab_size, len(sentences), model_type, limit.group(2))
                return cls.train(sentences, int(limit.group(2)), model_type, oov, character_coverage, num_threads)
            if limit:
                raise FsalignError(
                    f"vocab_size={vocab_size} is too large for {len(sentences)} training transcripts "
                    f"({model_type}); the text supports at most {limit.group(2)}"
                ) from e
            raise FsalignError(f"SentencePiece training failed ({model_type}, vocab_size={vocab_size}): {e}") from e
        return cls(buffer.getvalue(), oov=oov)

    @property
    def model(self) -> bytes:
        """The serialized SentencePiece model."""
        return self._model

    def _oov_items(self, words: List[str]) -> List[str]:
        unk = self._sp.unk_id()
        pieces = self._sp.encode(words, out_type=int) if words else []
        return sorted({w for w, ids in zip(words, pieces) if unk in ids})

    def _encode_words(self, words: List[str]) -> List[List[int]]:
        sample = self.sampling_alpha is not None
        ids = self._sp.encode(
            " ".join(words), out_type=int, enable_sampling=sample, alpha=self.sampling_alpha or 0.0, nbest_size=-1
        )
        result: List[List[int]] = []
        for i in ids:
            if i == self._sp.unk_id():  # only reachable when sampling picks an unknown segmentation
                raise FsalignError(f"SentencePiece produced <unk> for {' '.join(words)!r}")
            if self._word_start[i] or not result:
                result.append([])
            result[-1].append(i)
        return result

    def _decode_word(self, ids: List[int]) -> str:
        self._names_of(ids)  # range check
        return self._sp.decode(ids)

    def to_dict(self) -> dict:
        """JSON-serialisable dict: model (base64), OOV policy, sampling alpha (inverse of ``Tokenizer.from_dict``)."""
        return {
            "type": self.kind,
            "model": base64.b64encode(self._model).decode("ascii"),
            "oov": self.oov,
            "sampling_alpha": self.sampling_alpha,
        }

    @classmethod
    def _from_dict(cls, data: Mapping) -> "SentencePieceTokenizer":
        return cls(base64.b64decode(data["model"]), oov=data["oov"], sampling_alpha=data.get("sampling_alpha"))

    def save(self, directory: Pathlike) -> Path:
        """Like :meth:`Tokenizer.save`, plus the raw ``<unit>.model`` file for external tools (``load`` ignores it)."""
        directory = super().save(directory)
        (directory / f"{self.unit}.model").write_bytes(self._model)  # for external tools; load() ignores it
        return directory
