"""Tests of fsalign.corpus.normalize: a hand-checked table of written -> spoken text, num2words
itself as the reference for numbers, and properties on arbitrary Unicode text."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from num2words import num2words

from fsalign.corpus.normalize import (
    ABBREVIATIONS,
    LEADING_APOSTROPHE_WORDS,
    SPOKEN_WORD_RE,
    WrittenWord,
    normalize,
    spoken_words,
)
from fsalign.errors import FsalignError

# (written, spoken): each row checked by hand against the rules of the module docstring.
TABLE = [
    # case, punctuation, whitespace
    ("Hello, world.", "HELLO WORLD"),
    ("He paid $40 on the 3rd of May — 1,200 people came!",
     "HE PAID FORTY DOLLARS ON THE THIRD OF MAY ONE THOUSAND TWO HUNDRED PEOPLE CAME"),
    ("Wait… what?!", "WAIT WHAT"),
    ('(a) [b] {c} ; : "d"', "A B C D"),
    ("a  b\t\tc\nd\r\ne", "A B C D E"),
    ("", ""),
    (" \t\n ", ""),
    ("—", ""),
    ("$", ""),
    # Unicode to ASCII
    ("café", "CAFE"),
    ("naïve", "NAIVE"),
    ("Straße", "STRASSE"),
    ("“Quoted”", "QUOTED"),
    ("I ♥ NY 😀", "I NY"),
    ("co\u00adoperate", "COOPERATE"),
    # hyphens and dashes
    ("well-known", "WELL KNOWN"),
    ("a – b — c - d", "A B C D"),
    ("twenty-one", "TWENTY ONE"),
    ("3-4", "THREE FOUR"),
    ("5th-grade", "FIFTH GRADE"),
    ("MP3 COVID-19", "MP THREE COVID NINETEEN"),
    ("U.S.", "U S"),
    # apostrophes and single quotes
    ("don't", "DON'T"),
    ("don’t", "DON'T"),
    ("don`t", "DON'T"),
    ("o’clock", "O'CLOCK"),
    ("rock'n'roll", "ROCK'N'ROLL"),
    ("rock ’n’ roll", "ROCK 'N ROLL"),
    ("‘Tis the season", "'TIS THE SEASON"),
    ("'twas", "'TWAS"),
    ("'Hello,' she said.", "HELLO SHE SAID"),
    ("'Hello world' he said", "HELLO WORLD HE SAID"),
    ("goin' home", "GOIN' HOME"),
    ("the dogs' bowls", "THE DOGS' BOWLS"),
    # cardinals, "and" dropped
    ("40", "FORTY"),
    ("21", "TWENTY ONE"),
    ("101", "ONE HUNDRED ONE"),
    ("1,200", "ONE THOUSAND TWO HUNDRED"),
    ("1,000,000", "ONE MILLION"),
    ("0", "ZERO"),
    ("007", "ZERO ZERO SEVEN"),
    # ordinals
    ("1st 2nd 3rd 4th", "FIRST SECOND THIRD FOURTH"),
    ("21st", "TWENTY FIRST"),
    ("11th 12th", "ELEVENTH TWELFTH"),
    ("100th", "ONE HUNDREDTH"),
    ("1,000th", "ONE THOUSANDTH"),
    # years: plain four-digit integers 1100-2099
    ("1990", "NINETEEN NINETY"),
    ("in 1905,", "IN NINETEEN OH FIVE"),
    ("2005", "TWO THOUSAND FIVE"),
    ("2010", "TWENTY TEN"),
    ("1100", "ELEVEN HUNDRED"),
    ("2099", "TWENTY NINETY NINE"),
    ("1099", "ONE THOUSAND NINETY NINE"),
    ("2100", "TWO THOUSAND ONE HUNDRED"),
    ("1,990", "ONE THOUSAND NINE HUNDRED NINETY"),
    ("1990-2000", "NINETEEN NINETY TWO THOUSAND"),
    ("1990s", "NINETEEN NINETIES"),
    ("1960's", "NINETEEN SIXTIES"),
    ("the '80s", "THE EIGHTIES"),
    # decimals, signs, percent
    ("3.5", "THREE POINT FIVE"),
    ("0.25", "ZERO POINT TWO FIVE"),
    ("3.05", "THREE POINT ZERO FIVE"),
    (".5", "POINT FIVE"),
    ("-5", "MINUS FIVE"),
    ("\u22125", "MINUS FIVE"),
    ("(-1990)", "MINUS ONE THOUSAND NINE HUNDRED NINETY"),
    ("40%", "FORTY PERCENT"),
    ("100 %", "ONE HUNDRED PERCENT"),
    ("-2.5%", "MINUS TWO POINT FIVE PERCENT"),
    # money
    ("$40", "FORTY DOLLARS"),
    ("$1", "ONE DOLLAR"),
    ("$3.50", "THREE DOLLARS FIFTY CENTS"),
    ("$0.99", "NINETY NINE CENTS"),
    ("$1.01", "ONE DOLLAR ONE CENT"),
    ("$2.5", "TWO POINT FIVE DOLLARS"),
    ("$1,200", "ONE THOUSAND TWO HUNDRED DOLLARS"),
    ("£5", "FIVE POUNDS"),
    ("£0.50", "FIFTY PENCE"),
    ("€2.01", "TWO EUROS ONE CENT"),
    ("¥500", "FIVE HUNDRED YEN"),
    # times
    ("10:30", "TEN THIRTY"),
    ("9:05", "NINE OH FIVE"),
    ("12:00", "TWELVE O'CLOCK"),
    ("10:30am", "TEN THIRTY AM"),
    ("25:70", "TWENTY FIVE SEVENTY"),
    # symbols and abbreviations
    ("R&D", "R AND D"),
    ("salt & pepper", "SALT AND PEPPER"),
    ("Mr. Smith", "MISTER SMITH"),
    ("Mrs Smith", "MISSUS SMITH"),
    ("Dr. Who", "DOCTOR WHO"),
    ("King Jr.", "KING JUNIOR"),
    ("Sr.", "SENIOR"),
    ("A vs. B", "A VERSUS B"),
    ("apples, pears, etc.", "APPLES PEARS ET CETERA"),
    ("St. Louis", "ST LOUIS"),
]


@pytest.mark.parametrize("written, spoken", TABLE)
def test_table(written, spoken):
    assert spoken_words(written) == spoken.split()


def test_written_tokens_keep_their_spoken_words():
    assert normalize("Hello,  $40\t— 1,200") == [
        WrittenWord("Hello,", ("HELLO",)),
        WrittenWord("$40", ("FORTY", "DOLLARS")),
        WrittenWord("—", ()),
        WrittenWord("1,200", ("ONE", "THOUSAND", "TWO", "HUNDRED")),
    ]


def test_a_single_quote_spans_tokens_and_closes_once():
    # the quote opened by 'Hello closes at world,' so the later dogs' keeps its apostrophe
    assert spoken_words("'Hello world,' the dogs' bowls") == ["HELLO", "WORLD", "THE", "DOGS'", "BOWLS"]
    # inside an open quote a trailing apostrophe is taken as the closing quote
    assert spoken_words("'I'm goin' now") == ["I'M", "GOIN", "NOW"]


def test_not_a_string_is_an_error():
    with pytest.raises(FsalignError, match="must be a str, got bytes"):
        normalize(b"hello")


def test_abbreviations_speak_words_of_the_pattern():
    for written, spoken in ABBREVIATIONS.items():
        assert spoken_words(written.lower() + ".") == list(spoken)
    assert all(SPOKEN_WORD_RE.match(w) for w in LEADING_APOSTROPHE_WORDS)


def _reference_words(n2w_text):
    """num2words' English, split at spaces, hyphens and commas, without "and"."""
    return [w for w in re.split(r"[\s,-]+", n2w_text.upper()) if w and w != "AND"]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**15 - 1).filter(lambda n: not 1100 <= n <= 2099))
def test_integers_read_as_num2words(n):
    assert spoken_words(str(n)) == _reference_words(num2words(n))
    assert spoken_words(f"{n:,}") == _reference_words(num2words(n))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**15 - 1), st.sampled_from(["st", "nd", "rd", "th", "TH"]))
def test_ordinals_read_as_num2words(n, suffix):
    assert spoken_words(f"{n}{suffix}") == _reference_words(num2words(n, to="ordinal"))


def test_years_read_as_num2words():
    for n in range(1100, 2100):
        assert spoken_words(str(n)) == _reference_words(num2words(n, to="year")), n


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.text("0123456789", min_size=1, max_size=6))
def test_decimals_read_digit_by_digit(whole, frac):
    names = "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE".split()
    assert spoken_words(f"{whole}.{frac}") == _reference_words(num2words(whole)) + ["POINT"] + [
        names[int(d)] for d in frac
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12),
    st.sampled_from(["", ".", ",", "!", "?", ";", ":", "...", "…", ")", '"', "”"]),
    st.sampled_from(["", "(", '"', "“"]),
)
def test_plain_words_are_upper_cased_without_punctuation(word, after, before):
    expected = list(ABBREVIATIONS.get(word.upper(), (word.upper(),)))
    assert spoken_words(before + word + after) == expected


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60) | st.text("ab'’‘- .,:$£%&0123456789\n", max_size=40))
def test_any_text(text):
    written = normalize(text)
    for w in written:
        assert all(SPOKEN_WORD_RE.match(s) for s in w.spoken), (text, w)
        assert all(s in LEADING_APOSTROPHE_WORDS for s in w.spoken if s.startswith("'")), (text, w)
    assert [s for w in written for s in w.spoken] == spoken_words(text)
    assert [w.text for w in written] == text.split()
    start = 0
    for w in written:
        start = text.index(w.text, start) + len(w.text)


def test_spoken_word_pattern():
    for good in ["A", "DON'T", "ROCK'N'ROLL", "GOIN'", "'TIS"]:
        assert SPOKEN_WORD_RE.match(good), good
    for bad in ["", "'", "A''B", "''A", "A''", "a", "A-B", "A1", "'A'", "É"]:
        assert not SPOKEN_WORD_RE.match(bad), bad


def test_a_long_transcript_keeps_one_entry_per_written_token():
    words = "He paid $40 on the 3rd of May — 1,200 “people” came in 1990, didn’t they? café".split()
    text = " ".join(words[i % len(words)] + (str(i) if i % 7 == 0 else "") for i in range(10_000))
    written = normalize(text)
    assert [w.text for w in written] == text.split()
    assert [s for w in written for s in w.spoken] == spoken_words(text)
