"""Length buckets: model-ready batches cut to a few static lengths instead of TASK_FEATURE_LENGTHS.

  buckets = LengthBuckets()                         # 8, 12, 16, 24, 32, 48, 64, ... up to each feature's length
  for batch in grouped_batches(windows, 32, buckets, seed=0, first_window=0, skip=0):   # training
    ...                                             # each batch: one static shape, at most len(ladder) shapes
  batches, order = sorted_batches(rows, 64, buckets)                                    # evaluation

A batch arrives padded to the feature length (registry.model_dataset); its features are grouped by the length
they share (T5: the encoder tokens; the decoder tokens, targets and loss weights. BERT: input ids, token types,
attention mask and per-token labels), and each group is cut to the smallest bucket that holds the batch's
longest real row (real = up to the last non-zero entry of the group's marker feature). Only padding is
removed, so a model that masks padding computes the same values for every real position (up to the order of
float sums); examples longer than the feature length were already truncated by the task, as without buckets.

Training groups by length within a window, as HF Trainer's group_by_length does: a window of `window`
batches of the (seeded, shuffled) stream is sorted by length and cut into batches, whose order within the
window is then shuffled with (seed, window index). Everything is a pure function of the seed and the
position, so resuming after `skip` batches gives exactly the batches an uninterrupted run sees; no example is
dropped or repeated, since a window is cut into full batches. Evaluation sorts the whole split by length,
and `order` maps the results back to the split's order.

Multi-process training cuts global batches here and each process keeps its rows of each (train/data.py), so
the shapes are the same on every process by construction.
"""
import dataclasses
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np

Batch = dict[str, np.ndarray]

# (marker feature, features cut with it). Only the groups whose marker a batch has apply; the first group
# present is the primary sort key.
LENGTH_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("encoder_input_tokens", ("encoder_input_tokens", "encoder_segment_ids", "encoder_positions")),
    ("decoder_target_tokens", ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                               "decoder_segment_ids", "decoder_positions")),
    ("attention_mask", ("attention_mask", "input_ids", "token_type_ids", "labels")),
)


@dataclasses.dataclass(frozen=True)
class LengthBuckets:
  """Which lengths a batch may be cut to (gin: `runs.train.buckets = @buckets.LengthBuckets()`).

  Attributes:
    lengths: the bucket lengths; None = the ladder min_length * (1, 1.5, 2, 3, 4, 6, ...), i.e. powers of two and
      1.5x them (at most a third of a batch is bucket padding). A feature's own padded length is always the
      last bucket, and larger entries are ignored.
    min_length: the smallest bucket of the default ladder.
    window: batches per length-sorted window in training (HF Trainer groups 50).
  """
  lengths: Optional[Sequence[int]] = None
  min_length: int = 8
  window: int = 50

  def __post_init__(self):
    if self.min_length < 1 or self.window < 1 or any(int(n) < 1 for n in self.lengths or ()):
      raise ValueError(f"LengthBuckets needs positive lengths, min_length and window, got {self}")

  def ladder(self, width: int) -> tuple[int, ...]:
    """The bucket lengths of a feature padded to `width`, ascending, ending with `width`."""
    if self.lengths is not None:
      return tuple(sorted({int(n) for n in self.lengths if int(n) < width} | {width}))
    ladder, base = [], self.min_length
    while base < width:
      ladder += [n for n in (base, base * 3 // 2) if n < width]
      base *= 2
    return tuple(ladder) + (width,)

  def bucket(self, length: int, width: int) -> int:
    """The smallest bucket of `ladder(width)` that holds `length` real positions."""
    ladder = self.ladder(width)
    return ladder[min(int(np.searchsorted(ladder, length)), len(ladder) - 1)]


def _groups(batch: Mapping[str, np.ndarray]) -> list[tuple[str, tuple[str, ...]]]:
  return [(marker, tuple(f for f in features if f in batch and np.ndim(batch[f]) == 2))
          for marker, features in LENGTH_GROUPS if marker in batch]


def real_lengths(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{marker: [n] real length of each row}: one past its last non-zero entry (0 for an all-zero row)."""
  lengths = {}
  for marker, _ in _groups(batch):
    nonzero = np.asarray(batch[marker]) != 0  # [n, l]
    lengths[marker] = np.where(nonzero.any(1), nonzero.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
  return lengths


def padded_widths(batch: Mapping[str, np.ndarray]) -> dict[str, int]:
  """{marker: the padded length l of its group} ([n, l] arrays)."""
  return {marker: int(np.shape(batch[marker])[1]) for marker, _ in _groups(batch)}


def cut(batch: Mapping[str, np.ndarray], widths: Mapping[str, int]) -> Batch:
  """Each group's features [n, l] -> [n, widths[marker]]; other features unchanged."""
  out = dict(batch)
  for marker, features in _groups(batch):
    for name in features:
      out[name] = batch[name][:, :widths[marker]]
  return out


def sort_order(lengths: Mapping[str, np.ndarray]) -> np.ndarray:
  """A stable argsort of rows by length: the first group's length, ties by the next groups'."""
  keys = list(lengths.values())
  return np.lexsort(tuple(reversed(keys)), axis=-1) if keys else np.arange(0)


def grouped_batches(windows: Iterator[Batch], batch_size: int, buckets: LengthBuckets, *, seed: int,
                    first_window: int, skip: int) -> Iterator[Batch]:
  """Training batches from windows of `buckets.window * batch_size` padded rows (module docstring).

  Args:
    windows: the shuffled stream in windows, each {name: [window * batch_size, ...]}, starting with the
      window numbered `first_window` (the window index seeds the order of its batches).
    skip: batches of the first window already consumed (0 <= skip < window).
  """
  for index, window in enumerate(windows, start=first_window):
    n = len(next(iter(window.values())))
    if n != buckets.window * batch_size:
      raise ValueError(f"a window has {n} rows; expected window={buckets.window} x batch_size={batch_size}")
    lengths, full = real_lengths(window), padded_widths(window)
    rows = sort_order(lengths).reshape(buckets.window, batch_size)  # [W, b] row ids, by length
    rows = rows[np.random.default_rng([seed, index]).permutation(buckets.window)]
    widths = np.array([[buckets.bucket(lengths[m][r].max(), full[m]) for m in lengths] for r in rows], np.int64)
    for k in range(skip if index == first_window else 0, buckets.window):
      yield cut({name: value[rows[k]] for name, value in window.items()}, dict(zip(lengths, widths[k].tolist())))


def sorted_batches(rows: Sequence[Mapping[str, np.ndarray]], batch_size: int, buckets: Optional[LengthBuckets]
                   ) -> tuple[list[Batch], np.ndarray]:
  """Evaluation: n padded rows -> (batches of `batch_size`, order [n]): batch row j of the concatenated
  batches is rows[order[j]] for j < n. The last batch is filled with copies of its last row.

  buckets=None: the split's order and the full padded length (fixed padding).
  """
  stacked = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
  order = np.arange(len(rows)) if buckets is None else sort_order(real_lengths(stacked))
  full = padded_widths(stacked)
  batches = []
  for start in range(0, len(rows), batch_size):
    chunk = order[start:start + batch_size]
    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk))])  # pad rows: the last row
    batch = {k: v[chunk] for k, v in stacked.items()}
    if buckets is not None:
      batch = cut(batch, {m: buckets.bucket(n.max(), full[m]) for m, n in real_lengths(batch).items()})
    batches.append(batch)
  return batches, order
