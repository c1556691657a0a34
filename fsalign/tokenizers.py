"""Tokenizers: transcript strings <-> word-structured token ids.

The engine takes a transcript as ``list[list[int]]``: one list of token ids per word.
Token ids are score-matrix columns; column 0 is reserved for blank (CTC) or
silence (HMM), so token ids start at 1 and ``num_labels`` counts column 0 too.

Units (``Tokenizer.unit``): ``char`` (letters and apostrophe), ``spm`` (SentencePiece
unigram LM), ``bpe`` (SentencePiece BPE), ``phone`` (a pronunciation lexicon: the CMU
dictionary by default; ``PhoneTokenizer`` and ``read_lexicon`` live in :mod:`fsalign.lexicon`
and are importable from here too). Text is normalised the same way everywhere: upper case, words
split at whitespace.

Out-of-vocabulary policy (``oov``): a word the tokenizer cannot encode (a character
outside the alphabet, a word missing from the lexicon, a SentencePiece ``<unk>``) makes
``encode`` raise :class:`~fsalign.errors.FsalignError` listing the offending words
(``oov="error"``) or return ``None`` for that utterance (``oov="skip"``), so the caller
can report and drop it. ``find_oov(text)`` lists them without encoding.

A tokenizer serialises to a JSON-able dict (``to_dict``/``Tokenizer.from_dict``) with no
file paths in it (a SentencePiece model is embedded as base64), so a checkpoint can
carry it; ``save(dir)``/``Tokenizer.load(dir)`` write/read ``dir/tokenizer.json``.
"""
import base64
import io
import json
import re
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

from fsalign.errors import FsalignError

__all__ = [
    "BLANK",
    "Tokenizer",
    "CharTokenizer",
    "SentencePieceTokenizer",
    "PhoneTokenizer",
    "read_lexicon",
    "normalize_words",
]

Pathlike = Union[str, Path]
BLANK = "<blk>"  # name of column 0: blank (CTC) or silence (HMM)
OOV_POLICIES = ("error", "skip")
_MAX_LISTED = 20  # OOV words named in an error message


def normalize_words(text: str) -> List[str]:
    """Split a transcript into upper-case words at whitespace."""
    return text.upper().split()


def _check_oov_policy(oov: str) -> str:
    if oov not in OOV_POLICIES:
        raise ValueError(f"oov must be one of {OOV_POLICIES}, got {oov!r}")
    return oov


def _format_oov(items: Sequence[str], what: str) -> str:
    shown = ", ".join(repr(w) for w in items[:_MAX_LISTED])
    more = f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"{len(items)} {what}: {shown}{more}"


class Tokenizer:
    """Common interface; see the module docstring.

    Attributes:
      unit: ``"char" | "spm" | "bpe" | "phone"``.
      token_names: name of every score-matrix column; ``token_names[0] == BLANK``.
      oov: ``"error"`` or ``"skip"``.
    """

    unit: str = ""
    token_names: List[str]
    oov: str
    _registry: Dict[str, type] = {}

    def __init_subclass__(cls, kind: str = "", **kwargs):
        super().__init_subclass__(**kwargs)
        if kind:
            Tokenizer._registry[kind] = cls
            cls.kind = kind

    @property
    def num_labels(self) -> int:
        """Number of score-matrix columns C, column 0 (blank/silence) included."""
        return len(self.token_names)

    def _oov_items(self, words: List[str]) -> List[str]:
        raise NotImplementedError

    def _encode_words(self, words: List[str]) -> List[List[int]]:
        raise NotImplementedError

    def find_oov(self, text: str) -> List[str]:
        """Words (or characters, for ``char``) of ``text`` this tokenizer cannot encode."""
        return self._oov_items(normalize_words(text))

    def encode(self, text: str) -> Optional[List[List[int]]]:
        """Encode a transcript.

        Args:
          text: the transcript; case and extra whitespace are ignored.

        Returns:
          Token ids per word (ids in ``[1, num_labels)``), or None if the text has
          out-of-vocabulary items and ``oov == "skip"``.

        Raises:
          FsalignError: out-of-vocabulary items and ``oov == "error"``; lists them.
        """
        words = normalize_words(text)
        bad = self._oov_items(words)
        if bad:
            if self.oov == "skip":
                return None
            raise FsalignError(f"cannot encode {text!r} with the {self.unit} tokenizer: {self._oov_message(bad)}")
        return self._encode_words(words)

    def _oov_message(self, bad: List[str]) -> str:
        return _format_oov(bad, "word(s) out of vocabulary")

    def decode(self, ids: Sequence[Sequence[int]]) -> str:
        """Token ids per word -> text (words joined by single spaces)."""
        return " ".join(self._decode_word(list(w)) for w in ids)

    def _decode_word(self, ids: List[int]) -> str:
        return "".join(self._names_of(ids))

    def _names_of(self, ids: List[int]) -> List[str]:
        for i in ids:
            if not 1 <= i < self.num_labels:
                raise ValueError(f"token id must be in [1, {self.num_labels}), got {i}")
        return [self.token_names[i] for i in ids]

    def to_dict(self) -> dict:
        """JSON-serialisable description (no file paths) rebuilt by ``Tokenizer.from_dict``."""
        raise NotImplementedError

    @staticmethod
    def from_dict(data: Mapping) -> "Tokenizer":
        """Rebuild any tokenizer from ``to_dict()`` output (dispatches on ``data["type"]``)."""
        import fsalign.lexicon  # noqa: F401  (defines PhoneTokenizer, kind "phone")

        kind = data.get("type")
        if kind not in Tokenizer._registry:
            raise FsalignError(f"unknown tokenizer type {kind!r}; expected one of {sorted(Tokenizer._registry)}")
        return Tokenizer._registry[kind]._from_dict(data)

    def save(self, directory: Pathlike) -> Path:
        """Write ``directory/tokenizer.json`` and a readable ``directory/tokens.txt``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tokenizer.json").write_text(json.dumps(self.to_dict()))
        (directory / "tokens.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(self.token_names)))
        return directory

    @staticmethod
    def load(directory: Pathlike) -> "Tokenizer":
        """Read a tokenizer written by ``save``."""
        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise FsalignError(f"expected a tokenizer at {path} (written by Tokenizer.save), found none")
        return Tokenizer.from_dict(json.loads(path.read_text()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(unit={self.unit!r}, num_labels={self.num_labels}, oov={self.oov!r})"


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
        self.oov = _check_oov_policy(oov)

    def _oov_items(self, words: List[str]) -> List[str]:
        return sorted({c for w in words for c in w if c not in self._index})

    def _oov_message(self, bad: List[str]) -> str:
        return _format_oov(bad, "character(s) outside the alphabet")

    def _encode_words(self, words: List[str]) -> List[List[int]]:
        return [[self._index[c] for c in w] for w in words]

    def to_dict(self) -> dict:
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
        self.oov = _check_oov_policy(oov)
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
    ) -> "SentencePieceTokenizer":
        """Train a SentencePiece model on transcripts.

        Args:
          texts: training transcripts (normalised like ``encode`` input).
          vocab_size: number of pieces = ``num_labels`` (blank and ``<unk>`` included).
          model_type: ``"unigram"`` (alias ``"spm"``) or ``"bpe"``.
          oov: policy stored in the returned tokenizer.
          character_coverage: fraction of characters the model must cover.
          num_threads: trainer threads.

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
        directory = super().save(directory)
        (directory / f"{self.unit}.model").write_bytes(self._model)  # for external tools; load() ignores it
        return directory


def __getattr__(name: str):
    """``PhoneTokenizer`` and ``read_lexicon`` live in :mod:`fsalign.lexicon` (which imports
    this module for the base class); they stay importable from here."""
    if name in ("PhoneTokenizer", "read_lexicon"):
        from fsalign import lexicon

        return getattr(lexicon, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
