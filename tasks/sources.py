"""Raw data for every task, from the official files in a local directory or from TFDS.

Each benchmark dataset is a `Dataset`: its canonical example schema (TFDS's feature names and label ids, so one
set of formatting preprocessors serves both sources), its local files and its TFDS name. `LocalOrTfdsSource`
decides at `get_dataset` time which source to read (tasks/data_dir.py).

Local layout under the data dir (the official file names; README of /work/shared/data):
  super_glue/<Task>/{train,val,test}.jsonl     BoolQ CB COPA MultiRC ReCoRD RTE WiC WSC
  glue/<Task>/{train,dev,test}.tsv             CoLA SST-2 MRPC QQP STS-B QNLI RTE WNLI;
                                               MNLI: train, dev_matched, dev_mismatched, test_matched, test_mismatched
  clue/<task>/{train,dev,test}.json            afqmc tnews iflytek cmnli csl cluewsc2020 (JSON lines);
                                               ocnli: train.50k (+ train.3k, train.10k as splits train_3k, train_10k)
  conll2003/{train,valid,test}.txt, clue/cluener/{train,dev,test}.json   (tasks/ner.py)
Labels of unlabeled (test) rows are -1, as in TFDS. CLUE has no TFDS dataset, so CLUE tasks need a data dir.

A malformed line (bad JSON, wrong column count, missing field, unknown label) raises `MalformedLineError`
naming the file and line; with `skip_malformed=True` it is skipped and the count is logged as a warning.
"""
import csv
import dataclasses
import json
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

from absl import logging
import seqio
import tensorflow as tf

from tasks import data_dir as data_dir_lib

STRING = tf.TensorSpec([], tf.string)
STRINGS = tf.TensorSpec([None], tf.string)
INT = tf.TensorSpec([], tf.int32)
FLOAT = tf.TensorSpec([], tf.float32)
UNLABELED = -1

Record = Any  # one parsed line (dict) or sentence
Converter = Callable[[Record, int], list[dict]]  # (record, row number) -> canonical examples (may be empty)


class MalformedLineError(ValueError):
  """A data line that cannot be read; the message starts with `file:line:`."""


@dataclasses.dataclass(frozen=True)
class FileFormat:
  """How to cut a file into records: `rows(path)` yields (line number, payload); `parse(payload)` -> record."""
  rows: Callable[[str], Iterator[tuple[int, Any]]]
  parse: Callable[[Any], Record]


def _lines(path: str) -> Iterator[tuple[int, str]]:
  with open(path, encoding="utf-8-sig") as f:  # -sig: MRPC's files start with a BOM
    for number, line in enumerate(f, start=1):
      if line.strip():
        yield number, line


JSON_LINES = FileFormat(_lines, json.loads)


def tsv(columns: Sequence[str] | None = None) -> FileFormat:
  """Tab-separated, no quoting (GLUE). `columns` for files without a header line (CoLA train/dev)."""
  def rows(path: str) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
      reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
      names = list(columns) if columns else next(reader, [])
      for fields in reader:
        if fields:
          yield reader.line_num, (names, fields)

  def parse(payload):
    names, fields = payload
    if len(fields) != len(names):
      raise ValueError(f"{len(fields)} tab-separated fields, the header has {len(names)}")
    return dict(zip(names, fields))

  return FileFormat(rows, parse)


@dataclasses.dataclass(frozen=True)
class LocalFiles:
  """A dataset's files under the data dir.

  Attributes:
    split_files: split -> path relative to the data dir.
    file_format: a `FileFormat`, or split -> `FileFormat` where splits differ (CoLA).
    convert: (record, row number from 0) -> canonical examples; raising KeyError/ValueError/TypeError/IndexError
      marks the line malformed.
  """
  split_files: Mapping[str, str]
  file_format: FileFormat | Mapping[str, FileFormat]
  convert: Converter


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One benchmark dataset in canonical form.

  Attributes:
    name: e.g. 'glue_rte' (used in messages).
    features: canonical element spec: feature -> tf.TensorSpec (or a dict of them, e.g. MultiRC's idx).
    local: the files in a local data dir.
    tfds_name: e.g. 'glue/rte:2.0.0' (seqio wants a version), or None where TFDS has no such dataset.
    tfds_splits: our split -> TFDS split; empty = train, validation, test under their own names.
  """
  name: str
  features: Mapping[str, Any]
  local: LocalFiles
  tfds_name: str | None = None
  tfds_splits: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def tfds_split_map(self) -> dict[str, str]:
    """Our split -> TFDS split ({} without a TFDS dataset)."""
    if self.tfds_name is None:
      return {}
    return dict(self.tfds_splits) or {split: split for split in ("train", "validation", "test")}

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*self.local.split_files, *self.tfds_split_map]))


def read_examples(path: str, file_format: FileFormat, convert: Converter,
                  skip_malformed: bool = False) -> list[dict]:
  """All canonical examples of one local file (module docstring for malformed lines)."""
  examples, skipped = [], 0
  for row, (line, payload) in enumerate(file_format.rows(path)):
    try:
      examples.extend(convert(file_format.parse(payload), row))
    except MalformedLineError:
      if not skip_malformed:
        raise
      skipped += 1
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
      if not skip_malformed:
        raise MalformedLineError(f"{path}:{line}: malformed line ({type(e).__name__}: {e}); fix it or pass "
                                 "skip_malformed=True to skip such lines") from None
      skipped += 1
  if skipped:
    logging.warning("%s: skipped %d malformed line(s)", path, skipped)
  return examples


def label_id(value: Any, label_values: Sequence[str]) -> int:
  """Index of a raw label (JSON true -> 'True', 0 -> '0') in `label_values`; ValueError if unknown."""
  text = str(value)
  if text not in label_values:
    raise ValueError(f"label {text!r} is not one of {list(label_values)}")
  return label_values.index(text)


def fields_and_label(fields: Mapping[str, str], label_key: str | None, label_values: Sequence[str] | None,
                     idx_key: str | None = None, drop_labels: Sequence[str] = (), flatten: str | None = None,
                     int_fields: Sequence[str] = ()) -> Converter:
  """Converter for one-example-per-line data.

  Args:
    fields: canonical name -> raw key.
    label_key: raw label key; a missing label gives -1 (unlabeled test rows).
    label_values: raw label values in label-id order; None for a float label (STS-B).
    idx_key: raw key of the example index; None uses the row number (as TFDS does for GLUE).
    drop_labels: raw labels whose rows are dropped (CLUE NLI's '-': no annotator majority).
    flatten: a nested dict whose keys are lifted to the top level first (WSC's 'target').
    int_fields: canonical fields cast to int (character offsets).
  """
  def convert(record: dict, row: int) -> list[dict]:
    if not isinstance(record, dict):
      raise TypeError(f"expected a JSON object / header row, got {type(record).__name__}")
    if flatten:
      record = {**record, **record[flatten]}
    example = {name: int(record[key]) if name in int_fields else _text(record[key]) for name, key in fields.items()}
    example["idx"] = int(record[idx_key]) if idx_key else row
    raw = record.get(label_key) if label_key else None
    if raw is not None and str(raw) in drop_labels:
      return []
    if label_values is None:
      example["label"] = float(raw) if raw not in (None, "") else float(UNLABELED)
    else:
      example["label"] = UNLABELED if raw is None else label_id(raw, label_values)
    return [example]
  return convert


def _text(value: Any) -> str:
  """A raw field as text; lists (CSL's keywords) are joined with ', '."""
  return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def text_features(*names: str, label: tf.TensorSpec = INT, **extra) -> dict[str, Any]:
  return {**{name: STRING for name in names}, "label": label, "idx": INT, **extra}


class LocalOrTfdsSource(seqio.DataSource):
  """Reads a `Dataset` from the local data dir or TFDS, decided at `get_dataset` time (tasks/data_dir.py).

  Local files are read eagerly (so a missing or malformed file fails at `get_dataset`, not deep inside
  tf.data) and served in canonical form; TFDS examples are cut down and cast to the same schema.
  """

  def __init__(self, task_name: str, dataset: Dataset, data_dir: str | None = None,
               skip_malformed: bool | None = None):
    super().__init__(splits=dataset.splits)
    self.task_name = task_name
    self.dataset = dataset
    self.data_dir = data_dir
    self.skip_malformed = skip_malformed
    self._tfds_source = None

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]  # seqio shards at the example level

  def num_input_examples(self, split: str) -> None:
    return None  # unknown until read; avoids a TFDS metadata fetch

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None, use_cached=False,
                  num_epochs=1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # unused, as in seqio's sources
    if split not in self.splits:
      raise ValueError(f"{self.task_name}: unknown split {split!r}; splits: {', '.join(self.splits)}")
    resolved = data_dir_lib.resolve(self.data_dir)
    if resolved.path is None:
      return self._tfds(split, resolved, shuffle, seed, shard_info)
    return self._local(split, resolved, shuffle, seed)  # shard_info: None here, seqio shards the examples

  def _local(self, split, resolved, shuffle, seed) -> tf.data.Dataset:
    local = self.dataset.local
    relative = local.split_files.get(split)
    hint = (f"set --gin.DATA_DIR=... or ${data_dir_lib.DATA_DIR_ENV} to a directory that has it"
            + (f", or set either to '{data_dir_lib.TFDS}' to read TFDS {self.dataset.tfds_name}"
               if split in self.dataset.tfds_split_map else ""))
    if relative is None:
      raise FileNotFoundError(f"{self.task_name} split {split!r}: no local file is defined for this split; {hint}")
    path = os.path.join(resolved.path, relative)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{self.task_name} split {split!r}: {path} not found (data dir from "
                              f"{resolved.origin}); {hint}")
    file_format = local.file_format
    if isinstance(file_format, Mapping):
      file_format = file_format[split]
    skip = self.skip_malformed if self.skip_malformed is not None else data_dir_lib.skip_malformed()
    examples = read_examples(path, file_format, local.convert, skip_malformed=skip)
    ds = _in_memory_dataset(examples, self.dataset.features)
    if shuffle and examples:
      ds = ds.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)  # the whole file
    return ds

  def _tfds(self, split, resolved, shuffle, seed, shard_info) -> tf.data.Dataset:
    if split not in self.dataset.tfds_split_map:
      what = "TFDS has no dataset for this task" if self.dataset.tfds_name is None else "TFDS has no such split"
      local = self.dataset.local.split_files.get(split, "?")
      raise FileNotFoundError(f"{self.task_name} split {split!r}: {what} (TFDS chosen by {resolved.origin}); "
                              f"set --gin.DATA_DIR=... or ${data_dir_lib.DATA_DIR_ENV} to a directory with {local}")
    if self._tfds_source is None:
      self._tfds_source = seqio.TfdsDataSource(self.dataset.tfds_name, splits=self.dataset.tfds_split_map)
    ds = self._tfds_source.get_dataset(split, shuffle=shuffle, seed=seed, shard_info=shard_info)
    return ds.map(lambda ex: _conform(ex, self.dataset.features), num_parallel_calls=tf.data.AUTOTUNE)


def _in_memory_dataset(examples: list[dict], features: Mapping[str, Any]) -> tf.data.Dataset:
  """Canonical examples -> a dataset of them, in order. Scalar features become columns (tensor slices: a
  whole-file shuffle buffer fills in a moment, where a Python generator takes ~17 s for SST-2's 67k rows)."""
  specs = tf.nest.flatten(features)
  if not examples or any(spec.shape.rank for spec in specs):  # list features (NER, ReCoRD): one by one
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=dict(features))
  columns = [tf.constant(column, spec.dtype) for column, spec in zip(
      zip(*(tf.nest.flatten({name: ex[name] for name in features}) for ex in examples)), specs)]
  return tf.data.Dataset.from_tensor_slices(tf.nest.pack_sequence_as(dict(features), columns))


def _conform(example: Mapping[str, Any], features: Mapping[str, Any]) -> dict[str, Any]:
  """Keeps the canonical features of a TFDS example and casts them (ClassLabel int64 -> int32)."""
  return {name: _conform(example[name], spec) if isinstance(spec, Mapping) else tf.cast(example[name], spec.dtype)
          for name, spec in features.items()}


# ===================================== the benchmark datasets =====================================

GLUE_TFDS_VERSION = "2.0.0"  # seqio needs versioned TFDS names; these are tensorflow-datasets 4.9's
SUPER_GLUE_TFDS_VERSION = "1.0.2"  # (the one T5 uses)


def _splits(directory: str, train: str, validation: str, test: str, extension: str) -> dict[str, str]:
  return {split: f"{directory}/{stem}.{extension}"
          for split, stem in (("train", train), ("validation", validation), ("test", test))}


def _super_glue(task: str, directory: str, features: Mapping[str, Any], convert: Converter,
                tfds_config: str | None = None) -> Dataset:
  return Dataset(f"super_glue_{task}", features,
                 LocalFiles(_splits(f"super_glue/{directory}", "train", "val", "test", "jsonl"), JSON_LINES, convert),
                 tfds_name=f"super_glue/{tfds_config or task}:{SUPER_GLUE_TFDS_VERSION}")


def _glue(task: str, directory: str, fields: Mapping[str, str], label_key: str, label_values: Sequence[str] | None,
          files: Mapping[str, str] | None = None, file_format: Any = None,
          tfds_splits: Mapping[str, str] | None = None) -> Dataset:
  features = text_features(*fields, label=FLOAT if label_values is None else INT)
  files = files or _splits(f"glue/{directory}", "train", "dev", "test", "tsv")
  return Dataset(f"glue_{task}", features,
                 LocalFiles(files, file_format or tsv(), fields_and_label(fields, label_key, label_values)),
                 tfds_name=f"glue/{task}:{GLUE_TFDS_VERSION}", tfds_splits=tfds_splits or {})


def _clue(task: str, fields: Mapping[str, str], label_values: Sequence[str], files: Mapping[str, str] | None = None,
          **convert_options) -> Dataset:
  int_fields = convert_options.get("int_fields", ())
  features = text_features(*(f for f in fields if f not in int_fields), **{f: INT for f in int_fields})
  return Dataset(f"clue_{task}", features,
                 LocalFiles(files or _splits(f"clue/{task}", "train", "dev", "test", "json"), JSON_LINES,
                            fields_and_label(fields, "label", label_values, **convert_options)))


def _same(*names: str) -> dict[str, str]:
  return {name: name for name in names}


def _multirc(record: dict, row: int) -> list[dict]:
  """One example per answer option, as TFDS's super_glue/multirc."""
  del row
  passage = record["passage"]
  return [{"paragraph": str(passage["text"]), "question": str(question["question"]), "answer": str(answer["text"]),
           "label": UNLABELED if answer.get("label") is None else int(bool(answer["label"])),
           "idx": {"paragraph": int(record["idx"]), "question": int(question["idx"]), "answer": int(answer["idx"])}}
          for question in passage["questions"] for answer in question["answers"]]


def _record(record: dict, row: int) -> list[dict]:
  """One example per query, entities/answers as sorted unique strings (TFDS's super_glue/record)."""
  del row
  text = str(record["passage"]["text"])
  entities = sorted({text[entity["start"]:entity["end"] + 1] for entity in record["passage"]["entities"]})
  return [{"passage": text, "query": str(qa["query"]), "entities": entities,
           "answers": sorted({str(answer["text"]) for answer in qa.get("answers", [])}),
           "idx": {"passage": int(record["idx"]), "query": int(qa["idx"])}} for qa in record["qas"]]


BOOL = ("False", "True")
BINARY = ("0", "1")
NLI3 = ("entailment", "neutral", "contradiction")  # MNLI's (and TFDS's) label order
ENTAILMENT2 = ("entailment", "not_entailment")
TNEWS_CODES = tuple(str(code) for code in range(100, 117) if code not in (105, 111))  # 15 used codes
WSC_FIELDS = {"text": "text", "span1_index": "span1_index", "span2_index": "span2_index",
              "span1_text": "span1_text", "span2_text": "span2_text"}
WSC_FEATURES = text_features("text", "span1_text", "span2_text", span1_index=INT, span2_index=INT)
COLA_COLUMNS = ("source", "label", "author_mark", "sentence")  # train/dev have no header
MNLI_FILES = {"train": "train", "validation": "dev_matched", "validation_matched": "dev_matched",
              "validation_mismatched": "dev_mismatched", "test": "test_matched", "test_matched": "test_matched",
              "test_mismatched": "test_mismatched"}

DATASETS: dict[str, Dataset] = {d.name: d for d in [
    # SuperGLUE (TFDS super_glue/<task>; WSC as super_glue/wsc.fixed, the version T5 uses)
    _super_glue("boolq", "BoolQ", text_features("question", "passage"),
                fields_and_label(_same("question", "passage"), "label", BOOL, "idx")),
    _super_glue("cb", "CB", text_features("premise", "hypothesis"),
                fields_and_label(_same("premise", "hypothesis"), "label", ("entailment", "contradiction", "neutral"),
                                 "idx")),
    _super_glue("copa", "COPA", text_features("premise", "choice1", "choice2", "question"),
                fields_and_label(_same("premise", "choice1", "choice2", "question"), "label", BINARY, "idx")),
    _super_glue("multirc", "MultiRC",
                {**text_features("paragraph", "question", "answer"), "idx": {"paragraph": INT, "question": INT,
                                                                            "answer": INT}}, _multirc),
    _super_glue("record", "ReCoRD", {"passage": STRING, "query": STRING, "entities": STRINGS, "answers": STRINGS,
                                     "idx": {"passage": INT, "query": INT}}, _record),
    _super_glue("rte", "RTE", text_features("premise", "hypothesis"),
                fields_and_label(_same("premise", "hypothesis"), "label", ENTAILMENT2, "idx")),
    _super_glue("wic", "WiC", text_features("word", "sentence1", "sentence2", start1=INT, start2=INT, end1=INT,
                                            end2=INT),
                fields_and_label(_same("word", "sentence1", "sentence2", "start1", "start2", "end1", "end2"), "label",
                                 BOOL, "idx", int_fields=("start1", "start2", "end1", "end2"))),
    _super_glue("wsc", "WSC", WSC_FEATURES,
                fields_and_label(WSC_FIELDS, "label", BOOL, "idx", flatten="target",
                                 int_fields=("span1_index", "span2_index")), tfds_config="wsc.fixed"),
    # GLUE (TFDS glue/<task>)
    _glue("cola", "CoLA", _same("sentence"), "label", BINARY,
          file_format={"train": tsv(COLA_COLUMNS), "validation": tsv(COLA_COLUMNS), "test": tsv()}),
    _glue("sst2", "SST-2", _same("sentence"), "label", BINARY),
    _glue("mrpc", "MRPC", {"sentence1": "#1 String", "sentence2": "#2 String"}, "Quality", BINARY),
    _glue("qqp", "QQP", _same("question1", "question2"), "is_duplicate", BINARY),
    _glue("stsb", "STS-B", _same("sentence1", "sentence2"), "score", None),
    _glue("mnli", "MNLI", {"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label", NLI3,
          files={split: f"glue/MNLI/{stem}.tsv" for split, stem in MNLI_FILES.items()},
          tfds_splits={split: stem.replace("dev", "validation") for split, stem in MNLI_FILES.items()}),
    _glue("qnli", "QNLI", _same("question", "sentence"), "label", ENTAILMENT2),
    _glue("rte", "RTE", _same("sentence1", "sentence2"), "label", ENTAILMENT2),
    _glue("wnli", "WNLI", _same("sentence1", "sentence2"), "label", BINARY),
    # CLUE (JSON lines; no TFDS dataset)
    _clue("afqmc", _same("sentence1", "sentence2"), BINARY),
    _clue("tnews", _same("sentence"), TNEWS_CODES),
    _clue("iflytek", _same("sentence"), tuple(str(i) for i in range(119))),
    _clue("cmnli", _same("sentence1", "sentence2"), NLI3, drop_labels=("-",)),
    _clue("ocnli", _same("sentence1", "sentence2"), NLI3, drop_labels=("-",),
          files={**_splits("clue/ocnli", "train.50k", "dev", "test", "json"),
                 "train_3k": "clue/ocnli/train.3k.json", "train_10k": "clue/ocnli/train.10k.json"}),
    _clue("csl", _same("abst", "keyword"), BINARY),
    _clue("cluewsc2020", WSC_FIELDS, ("false", "true"), flatten="target", int_fields=("span1_index", "span2_index")),
]}
