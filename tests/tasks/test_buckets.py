"""Length buckets (tasks/buckets.py) and the bucketed training stream (train/data.py) on real RTE.

Only padding is cut: every batch is a set of the fixed-padding stream's rows, each a prefix of its padded row
whose removed tail is all padding; a window holds exactly the rows the fixed-padding batches of the same
stretch hold (nothing dropped or repeated); the order is a pure function of (seed, position), so a resumed
stream equals the tail of an uninterrupted one; processes keep disjoint rows of each global batch that cover it.
"""
import collections

import numpy as np
import pytest

import tasks  # noqa: F401  (registers every task)
from prompt_tuning_jax.train import data
from tasks import buckets, data_dir

DATA = data_dir.SHARED_DATA_DIR
BATCH, WINDOW = 8, 3


def stream(task="bert_glue_rte", length=128, skip=0, buckets_=buckets.LengthBuckets(window=WINDOW), seed=0):
  return data.task_train_data(task, {"input_ids": length}, seed=seed, data_dir=DATA, buckets=buckets_)(BATCH, skip)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def row_key(batch, i, width):
  """Row i of a batch, padded back to `width`, as a hashable tuple (input ids, token types, mask, label)."""
  def full(x):
    return tuple(np.pad(x[i], (0, width - x.shape[1])).tolist())
  return full(batch["input_ids"]), full(batch["token_type_ids"]), full(batch["attention_mask"]), int(
      batch["labels"][i])


def test_ladder_and_bucket():
  default = buckets.LengthBuckets()
  assert default.ladder(64) == (8, 12, 16, 24, 32, 48, 64)
  assert default.ladder(512) == (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
  assert default.ladder(8) == (8,) and default.ladder(20) == (8, 12, 16, 20)
  assert buckets.LengthBuckets(lengths=[32, 100, 600]).ladder(128) == (32, 100, 128)
  assert [default.bucket(n, 64) for n in (0, 1, 8, 9, 24, 25, 64)] == [8, 8, 8, 12, 24, 32, 64]
  with pytest.raises(ValueError, match="positive"):
    buckets.LengthBuckets(window=0)


def test_t5_inputs_and_targets_are_cut_apart():
  rng = np.random.default_rng(0)
  n = BATCH * WINDOW
  enc, dec = rng.integers(1, 64, n), rng.integers(1, 8, n)
  tokens = lambda lengths, width: (np.arange(width)[None] < lengths[:, None]) * rng.integers(2, 9, (n, width))
  window = {"encoder_input_tokens": tokens(enc, 64), "decoder_target_tokens": tokens(dec, 8)}
  window["decoder_input_tokens"] = np.pad(window["decoder_target_tokens"][:, :-1], ((0, 0), (1, 0)))
  window["decoder_loss_weights"] = (window["decoder_target_tokens"] > 0).astype(np.int32)
  seen = []
  for batch in buckets.grouped_batches(iter([window]), BATCH, buckets.LengthBuckets(window=WINDOW), seed=0,
                                       first_window=0, skip=0):
    lengths = buckets.real_lengths(batch)
    assert batch["encoder_input_tokens"].shape[1] == buckets.LengthBuckets().bucket(
        lengths["encoder_input_tokens"].max(), 64)
    assert {batch[k].shape[1] for k in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights")
            } == {buckets.LengthBuckets().bucket(lengths["decoder_target_tokens"].max(), 8)}  # cut apart
    seen += lengths["encoder_input_tokens"].tolist()
  assert sorted(seen) == sorted(enc.tolist())


def test_windows_hold_the_fixed_padding_rows_cut_to_buckets():
  length = 128
  bucketed, fixed = take(stream(), 2 * WINDOW), take(stream(buckets_=None), 2 * WINDOW)
  ladder = buckets.LengthBuckets().ladder(length)
  for w in range(2):
    rows = collections.Counter(row_key(b, i, length) for b in bucketed[w * WINDOW:(w + 1) * WINDOW]
                               for i in range(BATCH))
    assert rows == collections.Counter(row_key(b, i, length) for b in fixed[w * WINDOW:(w + 1) * WINDOW]
                                       for i in range(BATCH))
  for batch in bucketed:
    width = batch["input_ids"].shape[1]
    assert width in ladder and batch["labels"].shape == (BATCH,)
    assert {batch[k].shape for k in ("input_ids", "token_type_ids", "attention_mask")} == {(BATCH, width)}
    assert width == ladder[np.searchsorted(ladder, batch["attention_mask"].sum(1).max())]  # the smallest that fits
    assert (batch["token_type_ids"].sum(1) > 0).all()  # sentence pairs: types 1 after the first [SEP], kept
  widths = [b["input_ids"].shape[1] for b in bucketed]
  assert len(set(widths)) > 1 and length in widths  # longer pairs truncated to the feature length, as without
  assert any(b["attention_mask"].sum(1).max() == length for b in fixed)


@pytest.mark.slow
def test_order_is_a_pure_function_of_seed_and_position():
  full = take(stream(), 3 * WINDOW)
  for other in (take(stream(), 3 * WINDOW), take(stream(skip=0), 3 * WINDOW)):
    for a, b in zip(full, other):
      assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  for skip in (1, WINDOW, WINDOW + 2):  # inside the first window, at a window edge, inside the second
    for a, b in zip(full[skip:], take(stream(skip=skip), 3 * WINDOW - skip)):
      assert all(np.array_equal(a[k], b[k]) for k in a), skip
  reseeded = take(stream(seed=1), WINDOW)
  assert any(not np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(full, reseeded))


@pytest.mark.slow
def test_processes_keep_disjoint_rows_that_cover_each_global_batch():
  """Process i of N keeps rows [i*b/N, (i+1)*b/N) of global batch k: the 1-process batch, whatever N."""
  whole = take(stream(), 2 * WINDOW)
  for count in (2, 4):
    parts = [take(data.task_train_data("bert_glue_rte", {"input_ids": 128}, seed=0, data_dir=DATA,
                                       buckets=buckets.LengthBuckets(window=WINDOW))(
                                           BATCH, 0, slice(i * BATCH // count, (i + 1) * BATCH // count)), 2 * WINDOW)
             for i in range(count)]
    for k, batch in enumerate(whole):
      shards = [part[k] for part in parts]
      assert {s["input_ids"].shape for s in shards} == {(BATCH // count, batch["input_ids"].shape[1])}  # one shape
      ids = [set(s["idx"].tolist()) for s in shards]
      assert sum(map(len, ids)) == BATCH and set().union(*ids) == set(batch["idx"].tolist())  # disjoint, cover
      for name in batch:
        np.testing.assert_array_equal(np.concatenate([s[name] for s in shards]), batch[name])
