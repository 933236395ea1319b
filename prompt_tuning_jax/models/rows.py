"""Row blocks: one sequence's rows kept as separate arrays until a layer mixes rows (the prompt seam).

Shapes: b=batch, l_i=block length, d=features.
"""
from typing import Callable, Union

import jax
import jax.numpy as jnp

Array = jax.Array


class RowBlocks(tuple):
  """Consecutive blocks [b, l_i, d] of one sequence [b, sum l_i, d] (axis 1), kept apart until rows mix.

  What the prompt slot hands the encoder: (tokens before the prompt, prompt, tokens after). The first layer's
  row-wise work (norm, query/key/value projections) runs per block, so autodiff forms no input gradient for
  a block that no trained parameter reaches (frozen token embeddings), where one joined array would get the
  whole [b, P + l, d] input gradient and then slice the prompt rows out (XLA does not sink a slice through a
  dot). Exact: only which products are formed changes.
  """

  @property
  def shape(self) -> tuple[int, ...]:
    first = self[0].shape
    return first[:1] + (sum(block.shape[1] for block in self),) + first[2:]

  def join(self) -> Array:
    return jnp.concatenate(self, axis=1)


Rows = Union[Array, RowBlocks]


def join_rows(x: Rows) -> Array:
  """x itself, or its blocks joined along axis 1."""
  return x.join() if isinstance(x, RowBlocks) else x


def rowwise(fn: Callable[[Array], Array], x: Rows) -> Rows:
  """fn(x) for an array; for RowBlocks, fn on each block (fn must treat rows independently)."""
  return RowBlocks(fn(block) for block in x) if isinstance(x, RowBlocks) else fn(x)
