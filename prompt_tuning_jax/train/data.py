"""Training batches from a seqio task or mixture, deterministic in (seed, batches consumed).

  data = task_train_data('glue_sst2_taskless', {'inputs': 128, 'targets': 8}, seed=0)
  batches = data(host_batch_size, batches_to_skip)   # the trainer's TrainData contract

The order is a pure function of the seed: seqio shuffles with that seed and repeats forever (each epoch
reshuffled, deterministically), each host reads its own shard (`seqio.ShardInfo(process_index,
process_count)`), and resuming skips the batches already consumed, so a restarted run sees exactly the
batches an uninterrupted one would have.
"""
from typing import Iterator, Mapping, Optional

import jax
import numpy as np
import seqio

from tasks import registry


def task_train_data(task_name: str, feature_lengths: Mapping[str, int], *, split: str = "train", seed: int = 0,
                    shuffle: bool = True, data_dir: Optional[str] = None, skip_malformed: Optional[bool] = None):
  """A `trainer.TrainData` over `task_name`'s `split` (padded to `feature_lengths`, batches of full size)."""
  def batches(host_batch_size: int, batches_to_skip: int) -> Iterator[dict[str, np.ndarray]]:
    ds = registry.model_dataset(
        task_name, split, feature_lengths, host_batch_size, drop_remainder=True, data_dir=data_dir,
        skip_malformed=skip_malformed, shuffle=shuffle, seed=seed, num_epochs=None,
        shard_info=seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count()))
    ds = ds.skip(batches_to_skip).prefetch(2)
    for batch in ds.as_numpy_iterator():
      yield {k: v for k, v in batch.items() if isinstance(v, np.ndarray) and v.dtype != object}
  return batches
