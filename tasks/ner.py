"""NER data (CoNLL-2003 columns, CLUENER JSON) and its BERT token-classification encoding.

Canonical examples (TFDS conll2003's schema): `tokens` [n] words, `ner` [n] tag ids (-1 where unlabeled).
  CoNLL-2003  conll2003/{train,valid,test}.txt: `token POS chunk NER` per line, a blank line between sentences,
              `-DOCSTART-` lines between documents; tags O, B-/I- PER ORG LOC MISC in TFDS's order. TFDS: conll2003.
  CLUENER     clue/cluener/{train,dev,test}.json: JSON lines {text, label: {type: {entity: [[start, end]]}}}
              with inclusive character offsets; words are characters; BIO tags over the 10 types. No TFDS.
BERT encoding: each word -> its WordPieces; the first piece carries the word's tag id, later pieces, [CLS],
[SEP] and words that vanish in tokenization (whitespace) carry -100 (ignored), as HF's token-classification
recipe. So the positions with a label are exactly one per kept word (postprocessors.word_tags relies on it).
"""
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow as tf

from tasks import formats
from tasks import readers
from tasks import sources
from tasks import vocabularies

CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
CLUENER_TYPES = ("address", "book", "company", "game", "government", "movie", "name", "organization", "position",
                 "scene")
CLUENER_TAGS = ("O",) + tuple(f"{prefix}-{t}" for t in CLUENER_TYPES for prefix in ("B", "I"))
NER_FEATURES = {"tokens": sources.STRINGS, "ner": tf.TensorSpec([None], tf.int32)}


def _conll_sentences(path: str) -> Iterator[tuple[int, Any]]:
  """(line of the first token, (path, [(line, text), ...])) per sentence."""
  sentence: list[tuple[int, str]] = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip() or line.startswith("-DOCSTART-"):
        if sentence:
          yield sentence[0][0], (path, sentence)
        sentence = []
      else:
        sentence.append((number, line))
  if sentence:
    yield sentence[0][0], (path, sentence)


def _parse_conll(payload) -> dict[str, list]:
  path, lines = payload
  tokens, tags = [], []
  for number, line in lines:
    fields = line.split()
    if len(fields) != 4 or fields[3] not in CONLL2003_TAGS:
      raise readers.MalformedLineError(
          f"{path}:{number}: malformed CoNLL line {line.rstrip()!r} (want 'token POS chunk NER' with NER in "
          f"{', '.join(CONLL2003_TAGS)}); fix it or pass skip_malformed=True to skip its sentence")
    tokens.append(fields[0])
    tags.append(CONLL2003_TAGS.index(fields[3]))
  return {"tokens": tokens, "ner": tags}


CONLL_COLUMNS = readers.FileFormat(_conll_sentences, _parse_conll)


def _cluener(record: dict, row: int) -> list[dict]:
  """Characters + BIO tag ids from CLUENER's entity spans (checked against the text).

  NOTE: BIO cannot nest; of overlapping spans the longer is kept (train has one: a company inside a book title).
  """
  del row
  text = record["text"]
  if "label" not in record:
    return [{"tokens": list(text), "ner": [readers.UNLABELED] * len(text)}]
  spans = []
  for entity_type, entities in record["label"].items():
    for entity, positions in entities.items():
      for start, end in positions:
        if text[start:end + 1] != entity:
          raise ValueError(f"{entity_type} span [{start}, {end}] is {text[start:end + 1]!r}, not {entity!r}")
        spans.append((start, end, entity_type))
  tags = [0] * len(text)
  for start, end, entity_type in sorted(spans, key=lambda span: span[0] - span[1]):  # longest first
    if not any(tags[start:end + 1]):
      tags[start:end + 1] = [CLUENER_TAGS.index(f"B-{entity_type}")] + [CLUENER_TAGS.index(f"I-{entity_type}")] * (
          end - start)
  return [{"tokens": list(text), "ner": tags}]


DATASETS = {
    "conll2003_ner": sources.Dataset(
        "conll2003_ner", NER_FEATURES,
        sources.LocalFiles({"train": "conll2003/train.txt", "validation": "conll2003/valid.txt",
                            "test": "conll2003/test.txt"}, CONLL_COLUMNS, lambda record, row: [record]),
        tfds_name="conll2003:1.0.0", tfds_splits={"train": "train", "validation": "dev", "test": "test"}),
    "cluener": sources.Dataset(
        "cluener", NER_FEATURES,
        sources.LocalFiles({"train": "clue/cluener/train.json", "validation": "clue/cluener/dev.json",
                            "test": "clue/cluener/test.json"}, readers.JSON_LINES, _cluener)),
}
TAGS = {"conll2003_ner": CONLL2003_TAGS, "cluener": CLUENER_TAGS}


def encode_words(vocabulary: vocabularies.WordPieceVocabulary, words: Sequence[str], tags: Sequence[int],
                 length: int) -> tuple[np.ndarray, np.ndarray]:
  """([CLS] pieces [SEP] ids, labels) for one sentence (module docstring), at most `length` tokens."""
  ids, labels = [vocabulary.cls_id], [formats.IGNORE_LABEL]
  for word, tag in zip(words, tags):
    pieces = vocabulary.encode(word)
    ids.extend(pieces)
    labels.extend([tag if tag >= 0 else formats.IGNORE_LABEL] + [formats.IGNORE_LABEL] * (len(pieces) - 1))
  ids, labels = ids[:length - 1] + [vocabulary.sep_id], labels[:length - 1] + [formats.IGNORE_LABEL]
  return np.asarray(ids, np.int32), np.asarray(labels, np.int32)


def token_classification_preprocessor(vocabulary: vocabularies.WordPieceVocabulary, default_length: int = 512):
  """Canonical NER examples -> input_ids, token_type_ids, attention_mask, labels, all [l] and unpadded."""
  def preprocess(dataset: tf.data.Dataset, sequence_length=None) -> tf.data.Dataset:
    length = (sequence_length or {}).get("input_ids") or default_length

    def encode(ex):
      def encode_numpy(words, tags):
        return encode_words(vocabulary, [w.decode("utf-8") for w in words], tags.tolist(), length)
      ids, labels = tf.numpy_function(encode_numpy, [ex["tokens"], ex["ner"]], [tf.int32, tf.int32], stateful=False)
      ids, labels = tf.ensure_shape(ids, [None]), tf.ensure_shape(labels, [None])
      return {"input_ids": ids, "token_type_ids": tf.zeros_like(ids), "attention_mask": tf.ones_like(ids),
              "labels": labels}
    return dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE)
  return preprocess

