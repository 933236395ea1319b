"""Task variants of the results table, registered on demand from the registered BERT tasks' local files.

- BoolQ: the shared data has no BoolQ train split (val.jsonl and the unlabeled test.jsonl only), so
  `bert_super_glue_boolq_valsplit` trains on val.jsonl rows [0, n) and evaluates on rows [n, end)
  (config.BOOLQ_TRAIN_ROWS).
- Holdout (learning-rate sweeps, pooling choice): `<task>_holdout` trains on the task's train split minus a
  seeded random `fraction` of its rows and evaluates on those rows, so a sweep never reads the dev set that
  the table reports. Row r is held out iff random.Random(f"{seed}:{r}").random() < fraction (row numbers from 0
  over the train file's non-empty rows, as `readers.read_examples`).
Everything else (BERT format, metrics) is the registered task's.
"""
import dataclasses
import random
from typing import Callable, Iterator, Optional

from tasks import readers, registry, sources

VALSPLIT_SUFFIX = "_valsplit"
HOLDOUT_SUFFIX = "_holdout"
BERT_PREFIX = "bert_"


def _rows_where(file_format: readers.FileFormat, keep: Callable[[int], bool]) -> readers.FileFormat:
  """`file_format` reading only the non-empty rows whose number (from 0, as `read_examples`) passes `keep`."""
  def rows(path: str) -> Iterator[tuple[int, object]]:
    for row, item in enumerate(file_format.rows(path)):
      if keep(row):
        yield item
  return readers.FileFormat(rows, file_format.parse)


def _split_format(spec: sources.Dataset, split: str) -> readers.FileFormat:
  file_format = spec.local.file_format
  return file_format[split] if isinstance(file_format, dict) else file_format


def _variant(spec: sources.Dataset, files: dict[str, tuple[str, readers.FileFormat]]) -> sources.Dataset:
  """`spec` with local splits {split: (source split, its filtered format)} and no TFDS source."""
  local = sources.LocalFiles({split: spec.local.split_files[source] for split, (source, _) in files.items()},
                             {split: fmt for split, (_, fmt) in files.items()}, spec.local.convert)
  return dataclasses.replace(spec, local=local, tfds_name=None, tfds_splits={})


def boolq_valsplit(train_rows: int) -> sources.Dataset:
  """super_glue_boolq with train = val rows [0, train_rows) and validation = the rest (local files only)."""
  spec = registry.DATASETS["super_glue_boolq"]
  fmt = _split_format(spec, "validation")
  return _variant(spec, {"train": ("validation", _rows_where(fmt, lambda r: r < train_rows)),
                         "validation": ("validation", _rows_where(fmt, lambda r: r >= train_rows))})


def is_held_out(row: int, fraction: float, seed: int) -> bool:
  """Whether train row `row` belongs to the holdout (module docstring)."""
  return random.Random(f"{seed}:{row}").random() < fraction


def holdout(spec: sources.Dataset, fraction: float, seed: int) -> sources.Dataset:
  """`spec` with train = its train rows not held out, validation = the held-out train rows."""
  if not 0 < fraction < 1:
    raise ValueError(f"holdout fraction={fraction}; expected 0 < fraction < 1")
  fmt = _split_format(spec, "train")
  held = lambda r: is_held_out(r, fraction, seed)
  return _variant(spec, {"train": ("train", _rows_where(fmt, lambda r: not held(r))),
                         "validation": ("train", _rows_where(fmt, held))})


def _register(task_name: str, name: str, variant: sources.Dataset) -> str:
  """Registers the BERT task `name` from the dataset of `task_name` swapped for `variant` (once)."""
  if name in registry.task_names():
    return name
  if not task_name.startswith(BERT_PREFIX):
    raise ValueError(f"{task_name}: the results table's variants are of BERT tasks ({BERT_PREFIX}...)")
  dataset = task_name[len(BERT_PREFIX):]
  original = registry.DATASETS[dataset]
  # NOTE: register_task looks the dataset up by name; the variant keeps the name (so its BERT format and metrics
  # are the task's) and is swapped in only for the call. The registered source keeps the variant.
  registry.DATASETS[dataset] = variant
  try:
    registry.register_task(dataset, registry.BERT, name=name)
  finally:
    registry.DATASETS[dataset] = original
  return name


def register_valsplit(task_name: str, train_rows: int) -> str:
  """Registers (once) the val-split variant of the BERT BoolQ task; returns its name."""
  return _register(task_name, task_name + VALSPLIT_SUFFIX, boolq_valsplit(train_rows))


def register_holdout(task_name: str, fraction: float, seed: int = 0,
                     spec: Optional[sources.Dataset] = None) -> str:
  """Registers (once) `<task_name>_holdout`: the train split of `spec` (default: task_name's dataset; BoolQ
  passes its val-split variant) cut into train and held-out validation rows; returns its name."""
  spec = spec or registry.DATASETS[task_name[len(BERT_PREFIX):]]
  return _register(task_name, task_name + HOLDOUT_SUFFIX, holdout(spec, fraction, seed))
