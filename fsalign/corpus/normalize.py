"""Written transcripts to spoken words, keeping which spoken words each written token became.

Users bring transcripts as people write them ("He paid $40 on the 3rd of May — 1,200 came!");
acoustic units need the words as spoken (``HE PAID FORTY DOLLARS ON THE THIRD OF MAY ONE
THOUSAND TWO HUNDRED CAME``). :func:`normalize` returns one :class:`WrittenWord` per
whitespace-separated written token, so that the times of its spoken words can be put back on
the token as written (a TextGrid words tier showing ``"$40"`` over ``FORTY DOLLARS``).

Every spoken word matches :data:`SPOKEN_WORD_RE`, ``^(?:'[A-Z]+|[A-Z]+(?:'[A-Z]+)*'?)$``:
upper-case ASCII letters with apostrophes between them and at most one trailing apostrophe;
a leading apostrophe occurs only on the words of :data:`LEADING_APOSTROPHE_WORDS`. So the
words fit a character inventory of ``A``-``Z`` and ``'``, and are spelt as in the CMU
dictionary (which lacks some of them, e.g. transliterations of foreign names).

Rules, applied to each written token:

* Unicode to ASCII with ``anyascii`` (``café`` -> ``CAFE``, ``naïve`` -> ``NAIVE``, other
  scripts transliterated); curly and other apostrophe-like marks (’ ‘ ‛ ′ ´ ʼ and the backtick)
  become ``'``, the minus sign ``−`` a ``-``; symbols (emoji, ©, °) and control characters
  separate words and say nothing; format characters (soft hyphen, zero-width space) are
  removed. Then upper case.
* Punctuation and dashes separate words and say nothing: ``well-known`` -> ``WELL KNOWN``,
  ``U.S.`` -> ``U S``, ``and/or`` -> ``AND OR``, a lone ``—`` -> no word. Hyphenated number
  words follow the same rule (``21`` -> ``TWENTY ONE``).
* Apostrophes: one between letters is kept (``DON'T``, ``O'CLOCK``, ``ROCK'N'ROLL``). A
  leading one is kept on :data:`LEADING_APOSTROPHE_WORDS` (``'TIS``, ``'EM``, ``'N``...;
  a trailing one on those is dropped, ``'n'`` -> ``'N``); on any other word it is an opening
  single quote: dropped, and a single quote is then open. A trailing one closes an open single
  quote (dropped); with no quote open it is kept (``goin'`` -> ``GOIN'``, ``dogs'`` ->
  ``DOGS'``). An apostrophe attached to no letter is dropped and closes an open quote.
* Numbers (``num2words``), "and" dropped as in spoken American English: ``40`` -> ``FORTY``,
  ``1,200`` -> ``ONE THOUSAND TWO HUNDRED``, ``101`` -> ``ONE HUNDRED ONE``. A plain
  four-digit integer from 1100 to 2099 (no sign, comma, decimals, ``%`` or currency) is read
  as a year: ``1990`` -> ``NINETEEN NINETY``, ``1905`` -> ``NINETEEN OH FIVE``, ``2005`` ->
  ``TWO THOUSAND FIVE``, ``1500`` -> ``FIFTEEN HUNDRED``. Ordinals ``3rd 21st 1,000th`` ->
  ``THIRD``, ``TWENTY FIRST``, ``ONE THOUSANDTH`` (any of st/nd/rd/th is accepted on any
  number). Decimals read their digits: ``3.05`` -> ``THREE POINT ZERO FIVE``, ``.5`` ->
  ``POINT FIVE``. A ``-`` that follows no letter, digit or apostrophe is a minus sign: ``-5``
  -> ``MINUS FIVE`` (but ``1990-2000`` is two years). ``40%`` -> ``FORTY PERCENT``. Plurals:
  ``1990s`` / ``1990's`` -> ``NINETEEN NINETIES``, ``'80s`` -> ``EIGHTIES``. Times
  ``H:MM`` / ``HH:MM`` with hour <= 23 and minutes <= 59: ``10:30`` -> ``TEN THIRTY``,
  ``10:05`` -> ``TEN OH FIVE``, ``10:00`` -> ``TEN O'CLOCK``; other ``a:b`` are two numbers.
  Integers of more than 15 digits, or with a leading zero (``007``), are read digit by digit.
  Units (``kg``) and scale letters (``$5m``) are not expanded.
* Money, with the symbol before the amount: ``$40`` -> ``FORTY DOLLARS``, ``$1`` -> ``ONE
  DOLLAR``, ``$3.50`` -> ``THREE DOLLARS FIFTY CENTS``, ``$0.50`` -> ``FIFTY CENTS``,
  ``$2.5`` -> ``TWO POINT FIVE DOLLARS``; likewise ``£`` (POUNDS, PENCE), ``€`` (EUROS,
  CENTS), ``¥`` (YEN). A currency symbol not before a number says nothing.
* ``&`` -> ``AND``; a ``%`` not after a number -> ``PERCENT``.
* Abbreviations (:data:`ABBREVIATIONS`, with or without the period): ``Mr`` MISTER, ``Mrs``
  MISSUS, ``Dr`` DOCTOR, ``Jr`` JUNIOR, ``Sr`` SENIOR, ``vs`` VERSUS, ``etc`` ET CETERA. Not
  ``St`` (Saint or Street) nor ``Ms`` (the CMU dictionary has ``MS`` as spoken).

Written tokens are ``text.split()``: any run of whitespace separates them; empty text gives
none. Everything is deterministic and pure Python; results per token are cached.
"""
import functools
import re
import types
import unicodedata
from dataclasses import dataclass
from typing import List, Tuple

from fsalign.errors import FsalignError

__all__ = [
    "WrittenWord",
    "normalize",
    "spoken_words",
    "SPOKEN_WORD_RE",
    "LEADING_APOSTROPHE_WORDS",
    "ABBREVIATIONS",
]

SPOKEN_WORD_RE = re.compile(r"^(?:'[A-Z]+|[A-Z]+(?:'[A-Z]+)*'?)$")
"""Every spoken word matches this pattern (see the module docstring)."""

LEADING_APOSTROPHE_WORDS = frozenset(["'BOUT", "'CAUSE", "'COURSE", "'EM", "'N", "'ROUND", "'TIL", "'TIS", "'TWAS"])
"""Contractions that keep their leading apostrophe (all are CMU dictionary entries)."""

ABBREVIATIONS = types.MappingProxyType({
    "MR": ("MISTER",),
    "MRS": ("MISSUS",),
    "DR": ("DOCTOR",),
    "JR": ("JUNIOR",),
    "SR": ("SENIOR",),
    "VS": ("VERSUS",),
    "ETC": ("ET", "CETERA"),
})
"""Written abbreviation (upper case, period optional) -> spoken words."""

_MAX_CARDINAL_DIGITS = 15  # longer integers are read digit by digit
_DIGITS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
_APOSTROPHES = frozenset("\u2019\u2018\u201b\u2032\u00b4\u02bc\u02b9`")
# symbol -> (singular, plural, subunit singular, subunit plural); a subunit reads two decimals.
_CURRENCIES = {
    "$": ("DOLLAR", "DOLLARS", "CENT", "CENTS"),
    "\u00a3": ("POUND", "POUNDS", "PENNY", "PENCE"),
    "\u20ac": ("EURO", "EUROS", "CENT", "CENTS"),
    "\u00a5": ("YEN", "YEN", None, None),
}
_ORDINAL_SUFFIXES = ("ST", "ND", "RD", "TH")

_INT = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
_NUM = rf"(?:{_INT}(?:\.\d+)?|(?<![A-Z0-9.])\.\d+)"
_PIECE_RE = re.compile(
    rf"""
      (?P<cur>[{"".join(_CURRENCIES)}])(?P<amount>{_NUM})
    | (?P<hour>\d{{1,2}}):(?P<minute>\d\d)(?!\d)
    | (?P<oint>{_INT})(?P<suffix>ST|ND|RD|TH|'?S)(?![A-Z0-9])
    | (?P<sign>(?<![A-Z0-9'])-)?(?P<num>{_NUM})(?P<pct>%)?
    | (?P<word>'?[A-Z]+(?:'[A-Z]+)*'?)
    | (?P<sym>[&%])
    | (?P<apos>')
    """,
    re.VERBOSE | re.ASCII,
)


@dataclass(frozen=True)
class WrittenWord:
    """One written token and the spoken words it became.

    Attributes:
      text: the token as the user wrote it (a maximal run of non-whitespace), e.g. ``"Hello,"``.
      spoken: its spoken words, each matching :data:`SPOKEN_WORD_RE`, e.g. ``("HELLO",)`` or
        ``("ONE", "THOUSAND", "TWO", "HUNDRED")``; empty for a token that says nothing (``"—"``).
    """

    text: str
    spoken: Tuple[str, ...]


def normalize(text: str) -> List[WrittenWord]:
    """Turn a written transcript into spoken words, token by written token.

    Args:
      text: the transcript as written; any Unicode.

    Returns:
      One :class:`WrittenWord` per whitespace-separated token of ``text``, in order (none for
      empty or all-whitespace text). The rules are those of the module docstring.

    Raises:
      FsalignError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise FsalignError(f"a transcript must be a str, got {type(text).__name__}: {text!r:.80}")
    out = []
    quote_open = False
    for token in text.split():
        spoken, quote_open = _token(token, quote_open)
        out.append(WrittenWord(token, spoken))
    return out


def spoken_words(text: str) -> List[str]:
    """The spoken words of a written transcript, flattened.

    Args:
      text: the transcript as written.

    Returns:
      The concatenation of ``w.spoken`` over ``normalize(text)``.

    Raises:
      FsalignError: ``text`` is not a ``str``.
    """
    return [s for w in normalize(text) for s in w.spoken]


@functools.lru_cache(maxsize=4096)
def _char(c: str) -> str:
    if c in _CURRENCIES:
        return c
    if c in _APOSTROPHES:
        return "'"
    if c == "\u2212":  # the minus sign is a math symbol, not a dash
        return "-"
    category = unicodedata.category(c)
    if category == "Cf":
        return ""
    if category[0] in "SCZ":
        return " "
    from anyascii import anyascii

    return anyascii(c)


def _to_ascii(token: str) -> str:
    """ASCII (plus the currency symbols of ``_CURRENCIES``), upper case."""
    if token.isascii():
        return token.replace("`", "'").upper()
    return "".join(map(_char, token)).upper()


@functools.lru_cache(maxsize=65536)
def _token(token: str, quote_open: bool) -> Tuple[Tuple[str, ...], bool]:
    """Spoken words of one written token, and whether a single quote is open after it."""
    out: List[str] = []
    for m in _PIECE_RE.finditer(_to_ascii(token)):
        if m.group("amount") is not None:
            out += _money(m.group("cur"), m.group("amount"))
        elif m.group("minute") is not None:
            out += _time(m.group("hour"), m.group("minute"))
        elif m.group("suffix") is not None:
            digits = m.group("oint").replace(",", "")
            if m.group("suffix") in _ORDINAL_SUFFIXES:
                out += _ordinal(digits)
            else:
                words = _year_or_int(digits)
                out += words[:-1] + [_plural(words[-1])]
        elif m.group("num") is not None:
            signed, pct, num = m.group("sign") is not None, m.group("pct") is not None, m.group("num")
            out += (["MINUS"] if signed else []) + (_number(num) if signed or pct else _year_or_int(num))
            out += ["PERCENT"] if pct else []
        elif m.group("word") is not None:
            words, quote_open = _word(m.group("word"), quote_open)
            out += words
        elif m.group("sym") is not None:
            out.append("AND" if m.group("sym") == "&" else "PERCENT")
        else:  # an apostrophe attached to no letter
            quote_open = False
    return tuple(out), quote_open


def _word(word: str, quote_open: bool) -> Tuple[List[str], bool]:
    if word.startswith("'"):
        if word.rstrip("'") in LEADING_APOSTROPHE_WORDS:
            return [word.rstrip("'")], quote_open
        word, quote_open = word[1:], True
    if word.endswith("'") and quote_open:
        word, quote_open = word[:-1], False
    return list(ABBREVIATIONS.get(word, (word,))), quote_open


def _words_of(n2w: str) -> List[str]:
    """num2words' English to spoken words: hyphens and commas split, "and" dropped."""
    return [w for w in re.findall(r"[A-Z]+", n2w.upper()) if w != "AND"]


@functools.lru_cache(maxsize=None)
def _small_cardinal(n: int) -> Tuple[str, ...]:
    """num2words for ``0 <= n < 1000`` or a power of 1000 (at most 1000 + 5 entries)."""
    from num2words import num2words

    return tuple(_words_of(num2words(n, lang="en")))


def _cardinal(n: int) -> Tuple[str, ...]:
    """num2words' cardinal, composed from three-digit groups (num2words is slow on large n).

    For ``n < 10**15`` this equals ``_words_of(num2words(n))``: each nonzero group is read
    as a number below 1000 and followed by its scale word (THOUSAND, MILLION, ...).
    """
    if n < 1000:
        return _small_cardinal(n)
    words: List[str] = []
    for power in range((len(str(n)) - 1) // 3, -1, -1):
        group = n // 1000**power % 1000
        if group:
            words += _small_cardinal(group)
            words += _small_cardinal(1000**power)[1:] if power else ()
    return tuple(words)


def _int_words(digits: str) -> List[str]:
    """An integer written as ASCII digits (no commas); digit by digit if long or 0-led."""
    if len(digits) > _MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits[0] == "0"):
        return [_DIGITS[int(d)] for d in digits]
    return list(_cardinal(int(digits)))


def _number(num: str) -> List[str]:
    """A number as matched by ``_NUM``: commas, an optional fraction; not a year."""
    whole, _, frac = num.replace(",", "").partition(".")
    if "," in num:  # digit groups: a cardinal even with a leading zero
        whole = str(int(whole))
    words = _int_words(whole) if whole else []
    if frac:
        words += ["POINT"] + [_DIGITS[int(d)] for d in frac]
    return words


def _year_or_int(num: str) -> List[str]:
    if len(num) == 4 and num.isdigit() and 1100 <= int(num) <= 2099:
        return list(_year(int(num)))
    return _number(num)


@functools.lru_cache(maxsize=None)
def _year(n: int) -> Tuple[str, ...]:
    from num2words import num2words

    return tuple(_words_of(num2words(n, lang="en", to="year")))


@functools.lru_cache(maxsize=4096)
def _ordinal_of(n: int) -> Tuple[str, ...]:
    from num2words import num2words

    return tuple(_words_of(num2words(n, lang="en", to="ordinal")))


def _ordinal(digits: str) -> List[str]:
    if len(digits) > _MAX_CARDINAL_DIGITS:
        return _int_words(digits)
    return list(_ordinal_of(int(digits)))


def _plural(word: str) -> str:
    if word.endswith("Y"):
        return word[:-1] + "IES"
    return word + ("ES" if word.endswith("X") else "S")


def _time(hour: str, minute: str) -> List[str]:
    h, mm = int(hour), int(minute)
    if h > 23 or mm > 59:
        return _number(hour) + _number(minute)
    if mm == 0:
        return list(_cardinal(h)) + ["O'CLOCK"]
    if mm < 10:
        return list(_cardinal(h)) + ["OH", _DIGITS[mm]]
    return list(_cardinal(h)) + list(_cardinal(mm))


def _money(symbol: str, amount: str) -> List[str]:
    one, many, sub_one, sub_many = _CURRENCIES[symbol]
    whole, _, frac = amount.replace(",", "").partition(".")
    if len(frac) != 2 or sub_one is None:
        return _number(amount) + [one if amount == "1" else many]
    major, minor = int(whole or "0"), int(frac)
    words: List[str] = []
    if major or not minor:
        words += _number(whole or "0") + [one if major == 1 else many]
    if minor:
        words += list(_cardinal(minor)) + [sub_one if minor == 1 else sub_many]
    return words
