"""Vocabularies: seqio's SentencePiece for T5 and a BERT WordPiece vocabulary implemented as a seqio.Vocabulary.

T5: `t5_vocabulary()` is a `T5Vocabulary` (100 extra ids, 32,100 ids in all) whose file is chosen when it is
first opened, not when tasks are registered: the explicit path, else `$PROMPT_TUNING_T5_VOCAB`, else the run's
checkpoint's `spiece.model` (`use_checkpoint_vocabulary`: a HF T5 directory as transformers writes it), else T5's
public `gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model`. `check_t5_vocabulary` fails in one line
before a run starts when that file cannot be read (a missing local file, or gs:// without a network).

BERT: `WordPieceVocabulary(vocab_txt)` reproduces BERT's reference tokenizer: text cleaning, CJK characters
split off, whitespace + punctuation split, optional lower-casing with accent stripping, then greedy
longest-match-first WordPiece (`##` continuations, words over 100 characters -> [UNK]). `encode` returns ids
without [CLS]/[SEP] (tasks add them); `eos_id` is None; `pad_id` is 0 ([PAD]).
"""
import functools
import json
import os
import socket
import unicodedata
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning_jax import minilm
from prompt_tuning_jax.minilm import minilm_dir  # noqa: F401  (tests/conftest.py's `vocabularies.minilm_dir`)

T5_VOCAB_ENV = "PROMPT_TUNING_T5_VOCAB"
T5_DEFAULT_VOCAB = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
T5_EXTRA_IDS = 100
MAX_WORD_CHARS = 100  # BERT's max_input_chars_per_word


HF_T5_VOCAB_FILE = "spiece.model"  # what transformers' T5 tokenizer writes into a checkpoint directory
_checkpoint_vocab: Optional[str] = None


def use_checkpoint_vocabulary(checkpoint_dir: Optional[str]) -> Optional[str]:
  """Makes `checkpoint_dir`/spiece.model the default T5 vocabulary when that file exists (else clears the
  default); returns it or None. $PROMPT_TUNING_T5_VOCAB still wins. Call it before the vocabulary is opened."""
  global _checkpoint_vocab
  local = checkpoint_dir and "://" not in checkpoint_dir  # a t5x checkpoint on GCS holds no spiece.model
  path = os.path.join(checkpoint_dir, HF_T5_VOCAB_FILE) if local else None
  _checkpoint_vocab = path if path and tf.io.gfile.exists(path) else None
  return _checkpoint_vocab


def t5_vocabulary_path(path: Optional[str] = None) -> str:
  """`path`, else $PROMPT_TUNING_T5_VOCAB, else the checkpoint's spiece.model, else T5's public model."""
  return path or os.environ.get(T5_VOCAB_ENV) or _checkpoint_vocab or T5_DEFAULT_VOCAB


def _resolves(host: str) -> bool:
  try:
    socket.getaddrinfo(host, 443)
  except OSError:
    return False
  return True


def check_t5_vocabulary(path: str, resolves: Callable[[str], bool] = _resolves) -> None:
  """Raises FileNotFoundError (one line naming `path` and $PROMPT_TUNING_T5_VOCAB) when the SentencePiece file
  cannot be read: a missing local file, or a gs:// file while storage.googleapis.com does not resolve."""
  fix = (f"set {T5_VOCAB_ENV} to a local SentencePiece model, or INITIAL_CHECKPOINT_PATH to a HF T5 directory "
         f"holding {HF_T5_VOCAB_FILE} (README: T5 offline)")
  if path.startswith("gs://"):
    if not resolves("storage.googleapis.com"):
      raise FileNotFoundError(f"T5 vocabulary {path}: storage.googleapis.com does not resolve (offline?); {fix}")
  elif not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"T5 vocabulary {path}: no such file; {fix}")


class T5Vocabulary(seqio.SentencePieceVocabulary):
  """T5's SentencePiece (100 extra ids) whose file is `t5_vocabulary_path(path)` at the time it is first opened,
  so a run can choose it after the tasks were registered (module docstring)."""

  def __init__(self, path: Optional[str] = None):
    self._path = path
    super().__init__(t5_vocabulary_path(path), extra_ids=T5_EXTRA_IDS)

  def _model_context(self):
    if self._model is None:
      self._sentencepiece_model_file = t5_vocabulary_path(self._path)
    return super()._model_context()

  @property
  def sentencepiece_model_file(self) -> str:
    return self._sentencepiece_model_file if self._model is not None else t5_vocabulary_path(self._path)


def t5_vocabulary(path: Optional[str] = None) -> T5Vocabulary:
  """T5's SentencePiece vocabulary (`T5Vocabulary`), one per explicit path."""
  return _sentencepiece(path)


@functools.lru_cache(maxsize=None)
def _sentencepiece(path: Optional[str]) -> T5Vocabulary:
  return T5Vocabulary(path)


def minilm_vocab_path() -> str:
  """vocab.txt of the installed all-MiniLM-L6-v2 package (prompt_tuning_jax/minilm.py)."""
  return minilm.minilm_file("vocab.txt")


def bert_vocabulary(path: str | None = None) -> "WordPieceVocabulary":
  """WordPiece vocabulary from `path` (a vocab.txt), by default MiniLM's; cached per path."""
  return _wordpiece(path or minilm_vocab_path())


@functools.lru_cache(maxsize=None)
def _wordpiece(path: str) -> "WordPieceVocabulary":
  return WordPieceVocabulary(path)


def _is_whitespace(char: str) -> bool:
  return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
  return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def _is_punctuation(char: str) -> bool:
  cp = ord(char)
  # NOTE: BERT counts every non-alphanumeric ASCII symbol (e.g. "$", "^", "`") as punctuation.
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(char).startswith("P")


def _is_cjk(cp: int) -> bool:
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
          or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
          or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceVocabulary(seqio.Vocabulary):
  """BERT WordPiece as a seqio.Vocabulary (module docstring).

  Attributes:
    vocab_path: the vocab.txt, one token per line, id = line number; read on first use.
    lowercase: lower-case and strip accents (uncased models). The constructor's None reads `do_lower_case`
      from a tokenizer_config.json next to vocab.txt (True without one).
  """

  def __init__(self, vocab_path: str, lowercase: bool | None = None):
    super().__init__(extra_ids=0)
    self.vocab_path = vocab_path
    self._lowercase = lowercase

  @functools.cached_property
  def _tokens(self) -> list[str]:
    """The vocabulary, read on first use (registering a task never opens the file)."""
    with open(self.vocab_path, encoding="utf-8") as f:
      tokens = [line.rstrip("\n") for line in f]
    for special in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"):
      if special not in tokens:
        raise ValueError(f"{self.vocab_path} lacks the BERT special token {special}")
    if tokens.index("[PAD]") != seqio.vocabularies.PAD_ID:
      raise ValueError(f"{self.vocab_path}: [PAD] has id {tokens.index('[PAD]')}, seqio needs "
                       f"{seqio.vocabularies.PAD_ID}")
    return tokens

  @functools.cached_property
  def _ids(self) -> dict[str, int]:
    return {token: i for i, token in enumerate(self._tokens)}

  @functools.cached_property
  def lowercase(self) -> bool:
    if self._lowercase is not None:
      return self._lowercase
    config = os.path.join(os.path.dirname(self.vocab_path), "tokenizer_config.json")
    if not os.path.exists(config):
      return True
    with open(config, encoding="utf-8") as f:
      return bool(json.load(f).get("do_lower_case", True))

  @property
  def eos_id(self) -> None:
    return None

  @property
  def unk_id(self) -> int:
    return self._ids["[UNK]"]

  @property
  def cls_id(self) -> int:
    return self._ids["[CLS]"]

  @property
  def sep_id(self) -> int:
    return self._ids["[SEP]"]

  @property
  def _base_vocab_size(self) -> int:
    return len(self._tokens)

  def basic_tokenize(self, text: str) -> list[str]:
    """BERT's BasicTokenizer: clean, split off CJK characters and punctuation, optionally lower-case."""
    chars = []
    for char in text:
      cp = ord(char)
      if cp == 0 or cp == 0xFFFD or _is_control(char):
        continue
      if _is_whitespace(char):
        chars.append(" ")
      elif _is_cjk(cp):
        chars.extend((" ", char, " "))
      else:
        chars.append(char)
    words = []
    for word in "".join(chars).split():
      if self.lowercase:
        word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
      piece = []
      for char in word:
        if _is_punctuation(char):
          words.extend(["".join(piece)] if piece else [])
          words.append(char)
          piece = []
        else:
          piece.append(char)
      words.extend(["".join(piece)] if piece else [])
    return words

  def wordpiece(self, word: str) -> list[int]:
    """Greedy longest-match-first WordPiece ids of one basic token; [UNK] if any part has no match."""
    if len(word) > MAX_WORD_CHARS:
      return [self.unk_id]
    ids, start = [], 0
    while start < len(word):
      end = len(word)
      while end > start:
        piece = word[start:end] if start == 0 else "##" + word[start:end]
        if piece in self._ids:
          ids.append(self._ids[piece])
          break
        end -= 1
      if end == start:
        return [self.unk_id]
      start = end
    return ids

  def _encode(self, s: str) -> Sequence[int]:
    return [i for word in self.basic_tokenize(s) for i in self.wordpiece(word)]

  def _decode(self, ids: Iterable[int]) -> str:
    tokens = [self._tokens[i] for i in ids if i != self.pad_id]
    return " ".join(tokens).replace(" ##", "")

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """[] string -> [n] int32, through `_encode` (tf.numpy_function), so tf and Python ids are identical."""
    def encode(text):
      return np.asarray(self._encode(np.asarray(text).item().decode("utf-8")), np.int32)
    ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
    return tf.ensure_shape(ids, [None])

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """[..., n] int -> [...] string."""
    def decode(batch):
      flat = batch.reshape(-1, batch.shape[-1])
      return np.asarray([self._decode(row.tolist()).encode("utf-8") for row in flat],
                        object).reshape(batch.shape[:-1])
    text = tf.numpy_function(decode, [ids], tf.string, stateful=False)
    return tf.ensure_shape(text, ids.shape[:-1])

  def __eq__(self, other) -> bool:
    return (isinstance(other, WordPieceVocabulary) and self.vocab_path == other.vocab_path
            and self._lowercase == other._lowercase)

  def __hash__(self) -> int:
    return hash((self.vocab_path, self._lowercase))

  def __str__(self) -> str:
    return f"WordPieceVocabulary(vocab_path={self.vocab_path}, lowercase={self._lowercase})"
