"""WordPiece against transformers' BertTokenizer (built offline from the same vocab.txt); T5 vocab resolution."""
import csv
import itertools
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import transformers

from tasks import data_dir
from tasks import formats
from tasks import vocabularies

DATA = data_dir.SHARED_DATA_DIR


def _real_sentences() -> list[str]:
  """200 real sentences: SST-2 dev (lower-cased, tokenised), RTE val premises, AFQMC and TNEWS (Chinese)."""
  with open(os.path.join(DATA, "glue/SST-2/dev.tsv"), encoding="utf-8") as f:
    sst2 = [row[0] for row in itertools.islice(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1, 71)]
  def json_lines(path, key, n):
    with open(os.path.join(DATA, path), encoding="utf-8") as f:
      return [json.loads(line)[key] for line in itertools.islice(f, n)]
  sentences = (sst2 + json_lines("super_glue/RTE/val.jsonl", "premise", 70)
               + json_lines("clue/afqmc/dev.json", "sentence1", 30) + json_lines("clue/tnews/dev.json", "sentence", 30))
  assert len(sentences) == 200
  return sentences


@pytest.fixture(scope="module")
def hf_tokenizer():
  return transformers.BertTokenizer(vocab=vocabularies.minilm_vocab_path(), do_lower_case=True)


@pytest.fixture(scope="module")
def wordpiece():
  return vocabularies.WordPieceVocabulary(vocabularies.minilm_vocab_path())


def test_wordpiece_ids_equal_transformers_on_real_sentences(wordpiece, hf_tokenizer):
  sentences = _real_sentences() + ["Héllo, wörld! naïve café — “quotes” and $5.00", "x" * 150, "\u200b\ttab\x00"]
  for sentence in sentences:
    assert wordpiece.encode(sentence) == hf_tokenizer(sentence, add_special_tokens=False)["input_ids"], sentence


def test_wordpiece_tf_matches_python_and_decodes(wordpiece):
  sentences = _real_sentences()[::40]
  for sentence in sentences:
    ids = wordpiece.encode(sentence)
    np.testing.assert_array_equal(wordpiece.encode_tf(tf.constant(sentence)).numpy(), ids)
  ids = wordpiece.encode("Prompt tuning is unbelievably cheap.")
  assert wordpiece.decode(ids) == "prompt tuning is unbelievably cheap ."
  batch = tf.constant([ids + [0, 0], ids[:3] + [0] * (len(ids) - 1)])
  assert wordpiece.decode_tf(batch).numpy().tolist() == [b"prompt tuning is unbelievably cheap .",
                                                          wordpiece.decode(ids[:3]).encode()]
  assert wordpiece.vocab_size == 30522 and wordpiece.eos_id is None and wordpiece.lowercase
  assert (wordpiece.unk_id, wordpiece.cls_id, wordpiece.sep_id, wordpiece.pad_id) == (100, 101, 102, 0)


def test_pair_truncation_matches_transformers(hf_tokenizer):
  words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
  for length_a, length_b, max_length in itertools.product((1, 3, 4, 5, 9, 12), (1, 4, 5, 6, 12), (7, 10, 13)):
    a, b = " ".join(words[:length_a]), " ".join(words[:length_b])
    ids = hf_tokenizer(a, b, truncation=True, max_length=max_length)["input_ids"]
    keep_a, keep_b = formats.truncate_pair(tf.constant(length_a), tf.constant(length_b), max_length - 3)
    expected_a = ids.index(102) - 1
    assert (int(keep_a), int(keep_b)) == (expected_a, len(ids) - expected_a - 3), (length_a, length_b, max_length)


def test_t5_vocabulary_path_resolution(monkeypatch, tmp_path):
  """explicit > $PROMPT_TUNING_T5_VOCAB > the checkpoint's spiece.model > T5's public model, chosen when opened."""
  monkeypatch.delenv(vocabularies.T5_VOCAB_ENV, raising=False)
  monkeypatch.setattr(vocabularies, "_checkpoint_vocab", None)
  default = vocabularies.t5_vocabulary()
  assert default.sentencepiece_model_file == vocabularies.T5_DEFAULT_VOCAB  # not opened: seqio loads lazily
  assert default.extra_ids == 100
  assert vocabularies.use_checkpoint_vocabulary(str(tmp_path)) is None  # no spiece.model there
  (tmp_path / "spiece.model").write_bytes(b"")
  assert vocabularies.use_checkpoint_vocabulary(str(tmp_path)) == str(tmp_path / "spiece.model")
  assert default.sentencepiece_model_file == str(tmp_path / "spiece.model")  # the registered object follows
  assert vocabularies.use_checkpoint_vocabulary("gs://bucket/t5x_checkpoint") is None  # never touches GCS
  assert default.sentencepiece_model_file == vocabularies.T5_DEFAULT_VOCAB
  vocabularies.use_checkpoint_vocabulary(str(tmp_path))
  monkeypatch.setenv(vocabularies.T5_VOCAB_ENV, str(tmp_path / "spm.model"))
  assert vocabularies.t5_vocabulary().sentencepiece_model_file == str(tmp_path / "spm.model")
  assert vocabularies.t5_vocabulary("other.model").sentencepiece_model_file == "other.model"


def test_unreadable_t5_vocabulary_fails_in_one_line_naming_the_path_and_the_variable(tmp_path):
  missing = str(tmp_path / "nowhere.model")
  with pytest.raises(FileNotFoundError) as error:
    vocabularies.check_t5_vocabulary(missing)
  message = str(error.value)
  assert message.startswith(f"T5 vocabulary {missing}: no such file;") and "PROMPT_TUNING_T5_VOCAB" in message
  assert "\n" not in message
  offline = lambda host: False
  with pytest.raises(FileNotFoundError, match=r"^T5 vocabulary gs://t5-data/vocabs/cc_all\.32000\.100extra/"
                     r"sentencepiece\.model: storage\.googleapis\.com does not resolve \(offline\?\); set "
                     r"PROMPT_TUNING_T5_VOCAB"):
    vocabularies.check_t5_vocabulary(vocabularies.T5_DEFAULT_VOCAB, resolves=offline)
  vocabularies.check_t5_vocabulary(vocabularies.T5_DEFAULT_VOCAB, resolves=lambda host: True)
  (tmp_path / "here.model").write_bytes(b"")
  vocabularies.check_t5_vocabulary(str(tmp_path / "here.model"))