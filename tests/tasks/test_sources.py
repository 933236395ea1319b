"""Local readers on the real files of ../shared/data, data-dir resolution and its errors, malformed lines."""
import json
import logging
import os

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tasks import benchmarks
from tasks import data_dir
from tasks import ner
from tasks import readers
from tasks import sources

DATA = data_dir.SHARED_DATA_DIR
ALL = {**benchmarks.DATASETS, **ner.DATASETS}
# (dataset, split) -> examples, from /work/shared/data/MANIFEST.md (CMNLI/OCNLI dev: the lines with a gold label)
MANIFEST_COUNTS = {
    ("super_glue_rte", "validation"): 277, ("super_glue_cb", "validation"): 56,
    ("super_glue_boolq", "validation"): 3270, ("super_glue_copa", "validation"): 100,
    ("super_glue_wic", "validation"): 638, ("super_glue_wsc", "validation"): 104,
    ("super_glue_multirc", "validation"): 4848, ("super_glue_cb", "test"): 250,
    ("glue_sst2", "validation"): 872, ("glue_mrpc", "validation"): 408, ("glue_mrpc", "train"): 3668,
    ("glue_cola", "validation"): 1043, ("glue_cola", "test"): 1063, ("glue_rte", "validation"): 277,
    ("glue_qnli", "validation"): 5463, ("clue_afqmc", "validation"): 4316, ("clue_tnews", "validation"): 10000,
    ("clue_ocnli", "validation"): 2950, ("clue_ocnli", "train_3k"): 2994, ("clue_cmnli", "validation"): 12241,
    ("cluener", "train"): 10748, ("cluener", "validation"): 1343, ("cluener", "test"): 1345,
}


def _read(name: str, split: str) -> list[dict]:
  local = ALL[name].local
  file_format = local.file_format[split] if isinstance(local.file_format, dict) else local.file_format
  return readers.read_examples(os.path.join(DATA, local.split_files[split]), file_format, local.convert)


@pytest.mark.parametrize("name,split", sorted(MANIFEST_COUNTS))
def test_local_reader_counts_equal_manifest(name, split):
  assert len(_read(name, split)) == MANIFEST_COUNTS[(name, split)]


def test_local_readers_parse_fields_and_labels():
  cola = _read("glue_cola", "validation")[0]  # no header line: the first row is data
  assert cola == {"sentence": "The sailors rode the breeze clear of the rocks.", "idx": 0, "label": 1}
  mrpc = _read("glue_mrpc", "validation")[1]  # the BOM does not leak into the header
  assert mrpc["label"] == 0 and mrpc["sentence1"].startswith("Magnarelli said Racicot")
  assert _read("glue_sst2", "test")[0]["label"] == readers.UNLABELED
  copa = _read("super_glue_copa", "validation")[0]
  assert copa["label"] == 1 and copa["question"] == "effect"
  wsc = _read("super_glue_wsc", "validation")[0]
  assert (wsc["span1_text"], wsc["span1_index"], wsc["span2_text"], wsc["span2_index"]) == ("anyone", 32, "him", 47)
  multirc = _read("super_glue_multirc", "validation")
  assert multirc[1]["idx"] == {"paragraph": 0, "question": 0, "answer": 1} and multirc[1]["label"] == 1
  assert _read("clue_tnews", "validation")[0]["label"] == benchmarks.TNEWS_CODES.index("102")
  cluener = _read("cluener", "validation")[0]  # 彭小军 (name) at 0-2, 台湾 (address) at 15-16
  tags = [ner.CLUENER_TAGS[i] for i in cluener["ner"]]
  assert cluener["tokens"][:3] == list("彭小军") and tags[:4] == ["B-name", "I-name", "I-name", "O"]
  assert tags[15:17] == ["B-address", "I-address"]


def test_source_reads_through_tf_data():
  source = sources.LocalOrTfdsSource("super_glue_rte", benchmarks.DATASETS["super_glue_rte"], data_dir=DATA)
  examples = list(source.get_dataset("validation", shuffle=False).as_numpy_iterator())
  assert len(examples) == 277 and examples[0]["hypothesis"] == b"Christopher Reeve had an accident."
  shuffled = list(source.get_dataset("validation", shuffle=True, seed=1).as_numpy_iterator())
  assert sorted(e["idx"] for e in shuffled) == list(range(277)) and shuffled != examples


def test_data_dir_resolution_order(monkeypatch, tmp_path):
  monkeypatch.delenv(data_dir.DATA_DIR_ENV, raising=False)
  assert data_dir.resolve().path == DATA  # ../shared/data exists in this checkout
  monkeypatch.setenv(data_dir.DATA_DIR_ENV, str(tmp_path / "env"))
  assert data_dir.resolve().path == str(tmp_path / "env")
  with data_dir.using_data_dir(str(tmp_path / "gin")):
    assert data_dir.resolve().path == str(tmp_path / "gin")
    assert data_dir.resolve(str(tmp_path / "explicit")).path == str(tmp_path / "explicit")
    with data_dir.using_data_dir(data_dir.TFDS):
      assert data_dir.resolve().path is None
  assert data_dir.resolve().path == str(tmp_path / "env")  # the scope restored the previous setting
  monkeypatch.delenv(data_dir.DATA_DIR_ENV)
  monkeypatch.setattr(data_dir, "SHARED_DATA_DIR", str(tmp_path / "absent"))
  assert data_dir.resolve().path is None  # TFDS


@pytest.mark.parametrize("name,split,missing", [("super_glue_boolq", "train", "super_glue/BoolQ/train.jsonl"),
                                                ("glue_qnli", "train", "glue/QNLI/train.tsv")])
def test_missing_local_file_error_names_task_split_file_and_settings(name, split, missing):
  source = sources.LocalOrTfdsSource(name, benchmarks.DATASETS[name], data_dir=DATA)
  with pytest.raises(FileNotFoundError) as error:
    source.get_dataset(split)
  message = str(error.value)
  assert "\n" not in message
  for part in (name, repr(split), os.path.join(DATA, missing), "--gin.DATA_DIR", data_dir.DATA_DIR_ENV, "'tfds'"):
    assert part in message


def test_tfds_branch_maps_splits_and_conforms_examples(monkeypatch):
  """TFDS is stubbed (no downloads here): the source asks for the mapped split and casts to the canonical schema."""
  requests = []

  def fake_load(name, split, **kwargs):
    requests.append((name, split))
    return tf.data.Dataset.from_tensors({"premise": "p", "hypothesis": "h", "label": tf.constant(2, tf.int64),
                                         "idx": tf.constant(5, tf.int32), "extra": 1.0})
  monkeypatch.setattr(tfds, "load", fake_load)
  monkeypatch.setenv(data_dir.DATA_DIR_ENV, data_dir.TFDS)
  source = sources.LocalOrTfdsSource("glue_mnli", benchmarks.DATASETS["glue_mnli"])
  example = next(source.get_dataset("validation", shuffle=False).as_numpy_iterator())
  assert requests == [("glue/mnli:2.0.0", "validation_matched")]
  assert example == {"premise": b"p", "hypothesis": b"h", "label": 2, "idx": 5}
  assert source.get_dataset("validation").element_spec["label"].dtype == tf.int32


def test_task_without_tfds_dataset_explains_what_to_set():
  source = sources.LocalOrTfdsSource("clue_afqmc", benchmarks.DATASETS["clue_afqmc"], data_dir=data_dir.TFDS)
  with pytest.raises(FileNotFoundError, match=r"clue_afqmc split 'train': TFDS has no dataset .*clue/afqmc/train"):
    source.get_dataset("train")
  with pytest.raises(ValueError, match="unknown split 'dev'; splits: train, validation, test"):
    source.get_dataset("dev")


def test_malformed_json_line_raises_with_file_and_line_or_is_skipped(tmp_path, caplog):
  path = tmp_path / "val.jsonl"
  good = '{"premise": "p", "hypothesis": "h", "label": "entailment", "idx": %d}\n'
  path.write_text(good % 0 + "\n" + '{"premise": "broken\n' + good % 1 + good.replace("entailment", "maybe") % 2)
  convert = benchmarks.DATASETS["super_glue_rte"].local.convert
  with pytest.raises(readers.MalformedLineError, match=rf"^{path}:3: malformed line"):
    readers.read_examples(str(path), readers.JSON_LINES, convert)
  with caplog.at_level(logging.WARNING):
    examples = readers.read_examples(str(path), readers.JSON_LINES, convert, skip_malformed=True)
  assert [e["idx"] for e in examples] == [0, 1]  # line 3 (bad JSON) and line 5 (unknown label) skipped
  assert "skipped 2 malformed line(s)" in caplog.text


def test_malformed_tsv_row_through_the_source(tmp_path, caplog):
  (tmp_path / "glue" / "RTE").mkdir(parents=True)
  (tmp_path / "glue" / "RTE" / "dev.tsv").write_text(
      "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n2\tc\td\tnot_entailment\n")
  source = sources.LocalOrTfdsSource("glue_rte", benchmarks.DATASETS["glue_rte"])
  with data_dir.using_data_dir(str(tmp_path)):
    with pytest.raises(readers.MalformedLineError, match=r"dev.tsv:3: .*2 tab-separated fields, the header has 4"):
      source.get_dataset("validation")
    with data_dir.using_data_dir(skip_malformed=True), caplog.at_level(logging.WARNING):
      labels = [e["label"] for e in source.get_dataset("validation", shuffle=False).as_numpy_iterator()]
  assert labels == [0, 1] and "skipped 1 malformed line(s)" in caplog.text


def test_conll_reader(tmp_path):
  path = tmp_path / "train.txt"
  path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n"
                  "Peter NNP B-NP B-PER\nBlackburn NNP B-NP I-PER\n\nbad line\n")
  dataset = ner.DATASETS["conll2003_ner"].local
  with pytest.raises(readers.MalformedLineError, match=rf"^{path}:10: malformed CoNLL line 'bad line'"):
    readers.read_examples(str(path), dataset.file_format, dataset.convert)
  examples = readers.read_examples(str(path), dataset.file_format, dataset.convert, skip_malformed=True)
  assert [e["tokens"] for e in examples] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
  assert [[ner.CONLL2003_TAGS[t] for t in e["ner"]] for e in examples] == [["B-ORG", "O", "B-MISC"],
                                                                            ["B-PER", "I-PER"]]


def test_cluener_nested_spans_keep_the_outer_one_and_wrong_offsets_are_malformed(tmp_path):
  path = tmp_path / "train.json"
  nested = {"text": "读《招商银行年报》", "label": {"book": {"《招商银行年报》": [[1, 8]]}, "company": {"招商银行": [[2, 5]]}}}
  wrong = {"text": "温格的球队", "label": {"name": {"温格": [[1, 2]]}}}
  path.write_text(json.dumps(nested, ensure_ascii=False) + "\n" + json.dumps(wrong, ensure_ascii=False) + "\n")
  local = ner.DATASETS["cluener"].local
  with pytest.raises(readers.MalformedLineError, match=r"train.json:2: .*name span \[1, 2\] is '格的', not '温格'"):
    readers.read_examples(str(path), local.file_format, local.convert)
  (example,) = readers.read_examples(str(path), local.file_format, local.convert, skip_malformed=True)
  assert [ner.CLUENER_TAGS[t] for t in example["ner"]] == ["O", "B-book"] + ["I-book"] * 7
