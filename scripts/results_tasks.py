"""The BoolQ task of the results table: the shared data has no BoolQ train split (val.jsonl and the unlabeled
test.jsonl only), so this registers `bert_super_glue_boolq_valsplit`, whose 'train' split is val.jsonl rows
[0, n) and whose 'validation' split is rows [n, end) (results_config.BOOLQ_TRAIN_ROWS). Everything else (BERT
format, metrics) is the registered bert_super_glue_boolq's.
"""
import dataclasses
from typing import Iterator, Optional

from tasks import registry, sources

VALSPLIT_SUFFIX = "_valsplit"


def _row_slice(file_format: sources.FileFormat, start: int, stop: Optional[int]) -> sources.FileFormat:
  """`file_format` reading only non-empty rows [start, stop) (row numbers from 0, as `read_examples`)."""
  def rows(path: str) -> Iterator[tuple[int, object]]:
    for row, item in enumerate(file_format.rows(path)):
      if row >= start and (stop is None or row < stop):
        yield item
  return sources.FileFormat(rows, file_format.parse)


def boolq_valsplit(train_rows: int) -> sources.Dataset:
  """super_glue_boolq with train = val rows [0, train_rows) and validation = the rest (local files only)."""
  spec = registry.DATASETS["super_glue_boolq"]
  val_file = spec.local.split_files["validation"]
  local = sources.LocalFiles({"train": val_file, "validation": val_file},
                             {"train": _row_slice(spec.local.file_format, 0, train_rows),
                              "validation": _row_slice(spec.local.file_format, train_rows, None)},
                             spec.local.convert)
  return dataclasses.replace(spec, local=local, tfds_name=None, tfds_splits={})


def register_valsplit(task_name: str, train_rows: int) -> str:
  """Registers (once) the val-split variant of the BERT BoolQ task; returns its name."""
  name = task_name + VALSPLIT_SUFFIX
  if name in registry.task_names():
    return name
  original = registry.DATASETS["super_glue_boolq"]
  # NOTE: register_task looks the dataset up by name; the variant keeps the name (so its BERT format and metrics
  # are BoolQ's) and is swapped in only for the call. The registered source keeps the variant.
  registry.DATASETS["super_glue_boolq"] = boolq_valsplit(train_rows)
  try:
    registry.register_task("super_glue_boolq", registry.BERT, name=name)
  finally:
    registry.DATASETS["super_glue_boolq"] = original
  return name
