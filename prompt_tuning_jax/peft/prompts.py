"""Prompt tuning (Lester, Al-Rfou, Constant 2021; METHODS.md §A): learned rows joined to the embedded input.

The `input_transform` slot. T5: the P prompt rows are prepended to the embedded encoder input, before the
encoder's input dropout (as the official code); relative positions then simply span the P + n sequence.
`placement='after_bos'` inserts them after the first token instead. BERT: always after [CLS] (the default
there), on the LayerNorm-ed embeddings, so [CLS] stays at position 0 and prompt rows get no position
embedding. Prompt rows are always real in the mask; padding stays masked.

The parameter is a prompt bank `encoder/prompt/prompt` `[K, P, d]` (K = `num_prompts`, 1 by default):
each example picks its prompt with `prompt_index` [b] (None = prompt 0). Trained single prompts are
stacked into a bank with `prompt_params.stack_prompts` (ensembles, mixed-task batches).

Initialisation (prompt_init.py) happens in two steps, because the frozen embedding table does not exist
when the module initialises (model.init draws random frozen weights; the checkpoint comes later):
  1. `model.init`: initialisers that need no table (RandomUniform, FromFile) fill the bank directly;
     table-based ones (SampledVocab, ClassLabels, FromText) leave it NaN.
  2. `prompt_params.initialize_prompt(params, initializer, rng)` after the frozen checkpoint is loaded: draws the
     bank from the token table as it looks where the prompt joins (peft/prompt_params.py).
NOTE: the NaN placeholder is deliberate: forgetting step 2 fails at the first step instead of silently
training from a different init. gin binds the same `%PROMPT_INIT` to both steps (gin/methods/).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers, rows
from prompt_tuning_jax.peft import prompt_init

Array = jax.Array
PLACEMENTS = {"prefix": 0, "after_bos": 1}  # placement -> index of the first prompt row
DEFAULT_PLACEMENT = {"t5": "prefix", "bert": "after_bos"}
# NOTE: the input_transform slot is not told BERT's max_position_embeddings; 512 is every shipped preset's.
BERT_MAX_LENGTH = 512


def prompt_offset(backbone: str, placement: Optional[str] = None) -> int:
  """Index of the first prompt row for this backbone and placement (None = the backbone's default)."""
  placement = DEFAULT_PLACEMENT[backbone] if placement is None else placement
  if placement not in PLACEMENTS:
    raise ValueError(f"unknown prompt placement {placement!r}; known: {sorted(PLACEMENTS)}")
  if backbone == "bert" and placement != "after_bos":
    raise ValueError(f"placement={placement!r} on BERT would move [CLS] off position 0; use 'after_bos'")
  return PLACEMENTS[placement]


class Prompt(nn.Module):
  """A bank of K learned prompts `[K, P, d]` inserted at row `offset` of the embedded input.

  Attributes:
    length: P, prompt rows. embed_dim: d.
    initializer: a prompt_init initialiser (table-based ones leave NaN until
      `prompt_params.initialize_prompt`).
    num_prompts: K, the bank size.
    offset: index of the first prompt row (0 = prefix, 1 = after the first token).
    max_length: optional limit on P + input length.
    param_dtype: of the bank; float32 also under a bfloat16 backbone (it is cast to the activations').
  """
  length: int
  embed_dim: int
  initializer: Any = prompt_init.RandomUniform()
  num_prompts: int = 1
  offset: int = 0
  max_length: Optional[int] = None
  param_dtype: Any = jnp.float32

  def _init_bank(self, rng: Array, shape: Sequence[int], dtype: Any) -> Array:
    if self.initializer.needs_embedding:
      return jnp.full(shape, jnp.nan, dtype)  # filled by prompt_params.initialize_prompt (module docstring)
    return prompt_init.draw_bank(self.initializer, rng, shape, None).astype(dtype)

  @nn.compact
  def __call__(self, embedded: Array, mask: Array, tokens: Array, *, prompt_index: Optional[Array] = None,
               deterministic: bool = True) -> tuple[rows.Rows, Array]:
    """embedded [b, l, d], mask [b, l], prompt_index [b] or None -> ([b, P+l, d], [b, P+l]).

    The rows come back as rows.RowBlocks (before the offset, prompt, after); `rows.join_rows` joins them.
    """
    del tokens, deterministic  # The prompt joins before the input dropout; no dropout of its own.
    batch, length = mask.shape
    if self.max_length is not None and self.length + length > self.max_length:
      raise ValueError(f"prompt_length={self.length} + input length {length} = {self.length + length} "
                       f"exceeds max_length={self.max_length}")
    bank = layers.param_with_axes(self, "prompt", self._init_bank, (self.num_prompts, self.length, self.embed_dim),
                                  ("prompt_bank", "prompt", "embed"), self.param_dtype)
    if prompt_index is None:
      prompt = jnp.broadcast_to(bank[0], (batch,) + bank.shape[1:])  # [P, d] -> [b, P, d]
    else:
      # NOTE: an out-of-range index gives a NaN prompt (loud) rather than a clamped, silently wrong one.
      prompt = jnp.take(bank, prompt_index, axis=0, mode="fill", fill_value=jnp.nan)  # [b, P, d]
    o = self.offset
    # [b, l, d] -> [b, P+l, d], kept as blocks: the first layer then forms no input gradient for the token rows
    blocks = [embedded[:, :o], prompt.astype(embedded.dtype), embedded[:, o:]]
    embedded = rows.RowBlocks(block for block in blocks if block.shape[1])
    prompt_mask = jnp.ones((batch, self.length), mask.dtype)
    mask = jnp.concatenate([mask[:, :o], prompt_mask, mask[:, o:]], axis=1)  # [b, l] -> [b, P+l]
    return embedded, mask

  def token_rows(self, outputs: Array) -> Array:
    """Per-row outputs [b, P+l, ...] -> the input tokens' rows [b, l, ...] (a per-token head drops the prompt's)."""
    o = self.offset
    return jnp.concatenate([outputs[:, :o], outputs[:, o + self.length:]], axis=1)  # [b, P+l, ..] -> [b, l, ..]


def prompt_factory(*, where: str, backbone: str, embed_dim: int, prompt_length: int,
                   initializer: Any = prompt_init.RandomUniform(), num_prompts: int = 1,
                   placement: Optional[str] = None, max_length: Optional[int] = None) -> Optional[Prompt]:
  """The `input_transform` slot: a `Prompt` named 'prompt' on the encoder, None elsewhere.

  Args:
    where / backbone / embed_dim: from the backbone (models/slots.py).
    prompt_length: P (gin: %PROMPT_LENGTH). initializer: a prompt_init initialiser (gin: %PROMPT_INIT).
    num_prompts: K, the size of the prompt bank (ensembles).
    placement: 'prefix' or 'after_bos'; None = the backbone's default (T5 'prefix', BERT 'after_bos').
    max_length: limit on P + input length; None = unlimited on T5, BERT_MAX_LENGTH on BERT.
  """
  if where != "encoder":
    return None
  if max_length is None and backbone == "bert":
    max_length = BERT_MAX_LENGTH
  return Prompt(prompt_length, embed_dim, initializer, num_prompts, offset=prompt_offset(backbone, placement),
                max_length=max_length, name="prompt")
