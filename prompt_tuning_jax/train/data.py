"""Training batches from a seqio task or mixture, deterministic in (seed, batches consumed).

  data = task_train_data('glue_sst2_taskless', {'inputs': 128, 'targets': 8}, seed=0)
  batches = data(host_batch_size, batches_to_skip)   # the trainer's TrainData contract

The order is a pure function of the seed: seqio shuffles with that seed and repeats forever (each epoch
reshuffled, deterministically), each host reads its own shard (`seqio.ShardInfo(process_index,
process_count)`), and resuming skips the batches already consumed, so a restarted run sees exactly the
batches an uninterrupted one would have.

With `buckets` (the default) batches are grouped by length within windows of the stream and cut to a few
static lengths (tasks/buckets.py), so a short-text task stops paying for TASK_FEATURE_LENGTHS of padding and
the step compiles once per bucket; `buckets=None` pads every batch to the feature lengths.
"""
from typing import Iterator, Mapping, Optional

import jax
import numpy as np
import seqio

from tasks import buckets as buckets_lib
from tasks import registry


def agree_across_hosts(widths: np.ndarray) -> np.ndarray:
  """Bucket widths [window, groups] of this host -> the max over hosts, so every host's batch k has one shape."""
  if jax.process_count() == 1:
    return widths
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(widths)).max(0)


def task_train_data(task_name: str, feature_lengths: Mapping[str, int], *, split: str = "train", seed: int = 0,
                    shuffle: bool = True, data_dir: Optional[str] = None, skip_malformed: Optional[bool] = None,
                    buckets: Optional[buckets_lib.LengthBuckets] = buckets_lib.LengthBuckets()):
  """A `trainer.TrainData` over `task_name`'s `split`: batches of full size, padded to `feature_lengths` or
  cut to `buckets`."""
  def batches(host_batch_size: int, batches_to_skip: int) -> Iterator[dict[str, np.ndarray]]:
    window = buckets.window if buckets is not None else 1
    ds = registry.model_dataset(
        task_name, split, feature_lengths, host_batch_size * window, drop_remainder=True, data_dir=data_dir,
        skip_malformed=skip_malformed, shuffle=shuffle, seed=seed, num_epochs=None,
        shard_info=seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count()))
    ds = ds.skip(batches_to_skip // window).prefetch(2)
    arrays = ({k: v for k, v in batch.items() if isinstance(v, np.ndarray) and v.dtype != object}
              for batch in ds.as_numpy_iterator())
    if buckets is None:
      yield from arrays
      return
    yield from buckets_lib.grouped_batches(arrays, host_batch_size, buckets, seed=seed,
                                           first_window=batches_to_skip // window,
                                           skip=batches_to_skip % window, agree=agree_across_hosts)
  return batches
