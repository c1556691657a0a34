"""The tokenizer interface: transcript strings <-> word-structured token ids.

The engine takes a transcript as ``list[list[int]]``: one list of token ids per word.
Token ids are score-matrix columns; column 0 is reserved for blank (CTC) or
silence (HMM), so token ids start at 1 and ``num_labels`` counts column 0 too.

Out-of-vocabulary policy (``oov``): a word the tokenizer cannot encode (a character
outside the alphabet, a word missing from the lexicon, a SentencePiece ``<unk>``) makes
``encode`` raise :class:`~fsalign.errors.FsalignError` listing the offending words
(``oov="error"``) or return ``None`` for that utterance (``oov="skip"``), so the caller
can report and drop it. ``find_oov(text)`` lists them without encoding.

A tokenizer serialises to a JSON-able dict (``to_dict``/``Tokenizer.from_dict``) with no
file paths in it, so a checkpoint can carry it; ``save(dir)``/``Tokenizer.load(dir)``
write/read ``dir/tokenizer.json``. The implementations (:mod:`fsalign.corpus.tokenizers`,
:mod:`fsalign.corpus.lexicon`) register themselves by kind when their class is defined.
"""
import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from fsalign.errors import FsalignError
from fsalign.util import Pathlike

__all__ = ["BLANK", "OOV_POLICIES", "Tokenizer", "normalize_words", "check_oov_policy", "format_oov"]

BLANK = "<blk>"  # name of column 0: blank (CTC) or silence (HMM)
OOV_POLICIES = ("error", "skip")
_MAX_LISTED = 20  # OOV words named in an error message


def normalize_words(text: str) -> List[str]:
    """Split a transcript into upper-case words at whitespace."""
    return text.upper().split()


def check_oov_policy(oov: str) -> str:
    """Return ``oov`` if it is one of :data:`OOV_POLICIES`; raises ValueError otherwise."""
    if oov not in OOV_POLICIES:
        raise ValueError(f"oov must be one of {OOV_POLICIES}, got {oov!r}")
    return oov


def format_oov(items: Sequence[str], what: str) -> str:
    """Describe ``items`` as ``"<count> <what>: <items>"``, naming at most the first 20 of them."""
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
        return format_oov(bad, "word(s) out of vocabulary")

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
        kind = data.get("type")
        if kind not in Tokenizer._registry:
            raise FsalignError(
                f"unknown tokenizer type {kind!r}; expected one of {sorted(Tokenizer._registry)} "
                "(import fsalign.corpus.tokenizers, which defines them all)"
            )
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
