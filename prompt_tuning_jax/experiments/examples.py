"""The first examples of a task's split as numpy arrays: the inputs of the probes and measurements.

  data = first_examples("bert_glue_sst2", "validation", length=64, limit=32)   # {'input_ids': [32, 64], ...}
"""
from typing import Optional

import numpy as np

BERT_FEATURES = ("input_ids", "token_type_ids", "attention_mask", "labels")


def first_examples(task: str, split: str, length: int, limit: Optional[int]) -> dict[str, np.ndarray]:
  """The first `limit` (None: all) examples of `split` in file order: input_ids, token_type_ids, attention_mask
  [n, length], labels [n]."""
  from tasks import registry  # pylint: disable=g-import-not-at-top  (imports tensorflow, seqio; registers tasks)
  ds = registry.model_dataset(task, split, {"input_ids": length}, shuffle=False)
  if limit is not None:
    ds = ds.take(limit)
  rows = list(ds.as_numpy_iterator())
  if not rows:
    raise ValueError(f"task {task!r} split {split!r}: no examples")
  return {k: np.stack([r[k] for r in rows]) for k in BERT_FEATURES}
