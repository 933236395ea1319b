"""Raw data for every task, from the official files in a local directory or from TFDS.

Each benchmark dataset is a `Dataset`: its canonical example schema (TFDS's feature names and label ids, so one
set of formatting preprocessors serves both sources), its local files and its TFDS name (the datasets:
tasks/benchmarks.py, tasks/ner.py; the files' formats: tasks/readers.py). `LocalOrTfdsSource` decides at
`get_dataset` time which source to read (tasks/data_dir.py). Labels of unlabeled (test) rows are -1
(`readers.UNLABELED`), as in TFDS. CLUE has no TFDS dataset, so CLUE tasks need a data dir.
"""
import dataclasses
import os
from typing import Any, Mapping, Sequence

import seqio
import tensorflow as tf

from tasks import data_dir as data_dir_lib
from tasks.readers import Converter, FileFormat, read_examples

STRING = tf.TensorSpec([], tf.string)
STRINGS = tf.TensorSpec([None], tf.string)
INT = tf.TensorSpec([], tf.int32)
FLOAT = tf.TensorSpec([], tf.float32)


def text_features(*names: str, label: tf.TensorSpec = INT, **extra) -> dict[str, Any]:
  """Text features `names`, a `label` and an `idx` (the usual GLUE-style schema), plus `extra` specs."""
  return {**{name: STRING for name in names}, "label": label, "idx": INT, **extra}


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
