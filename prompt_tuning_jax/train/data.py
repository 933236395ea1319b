"""Training batches from a seqio task or mixture, deterministic in (seed, batches consumed).

  data = task_train_data('glue_sst2_taskless', {'inputs': 128, 'targets': 8}, seed=0)
  batches = data(batch_size, batches_to_skip, rows)   # the trainer's TrainData contract: rows of global batches

The order is a pure function of the seed: seqio shuffles with that seed and repeats forever (each epoch
reshuffled, deterministically), and resuming skips the batches already consumed, so a restarted run sees exactly
the batches an uninterrupted one would have.

Multi-process: global batch k is the same whatever the number of processes, and each process keeps only its
`rows` of it (partitioning.host_rows: process i of N keeps [i*b/N, (i+1)*b/N) on a data-parallel mesh), so a
2-process job trains on exactly the batches of a 1-process job. Every process iterates the whole shuffled stream
(reading and preprocessing it) and keeps its rows; t5x instead gives each host its own file shard, which reads
1/N of the data but makes the batches depend on the host count (README, "Multi-host").

With `buckets` (the default) batches are grouped by length within windows of the stream and cut to a few
static lengths (tasks/buckets.py), so a short-text task stops paying for TASK_FEATURE_LENGTHS of padding and
the step compiles once per bucket; `buckets=None` pads every batch to the feature lengths. The grouping and the
widths come from the whole global batch, so every process's rows have the same shape.
"""
from typing import Iterator, Mapping, Optional

import numpy as np
import seqio

from tasks import buckets as buckets_lib
from tasks import registry


def task_train_data(task_name: str, feature_lengths: Mapping[str, int], *, split: str = "train", seed: int = 0,
                    shuffle: bool = True, data_dir: Optional[str] = None, skip_malformed: Optional[bool] = None,
                    buckets: Optional[buckets_lib.LengthBuckets] = buckets_lib.LengthBuckets()):
  """A `trainer.TrainData` over `task_name`'s `split`: `rows` (default all) of global batches of `batch_size`,
  padded to `feature_lengths` or cut to `buckets`."""
  def batches(batch_size: int, batches_to_skip: int, rows: Optional[slice] = None) -> Iterator[dict[str, np.ndarray]]:
    rows = slice(0, batch_size) if rows is None else rows
    window = buckets.window if buckets is not None else 1
    ds = registry.model_dataset(
        task_name, split, feature_lengths, batch_size * window, drop_remainder=True, data_dir=data_dir,
        skip_malformed=skip_malformed, shuffle=shuffle, seed=seed, num_epochs=None,
        shard_info=seqio.ShardInfo(index=0, num_shards=1))  # the global stream, on every process
    ds = ds.skip(batches_to_skip // window).prefetch(2)
    arrays = ({k: v for k, v in batch.items() if isinstance(v, np.ndarray) and v.dtype != object}
              for batch in ds.as_numpy_iterator())
    if buckets is not None:
      arrays = buckets_lib.grouped_batches(arrays, batch_size, buckets, seed=seed,
                                           first_window=batches_to_skip // window, skip=batches_to_skip % window)
    for batch in arrays:
      yield {k: v[rows] for k, v in batch.items()}
  return batches
