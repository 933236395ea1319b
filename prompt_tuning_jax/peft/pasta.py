"""PASTA: special-token adaptation (Yang et al. 2023, arXiv 2210.04382; METHODS.md §E).

The `layer_input_hook` slot. Before encoder layer l, every position t of row b that holds the j-th special
token of that row (j counts occurrences of any special id, in order, from 0) gets a learned vector:
  h[b, t] += Drop(e[l, j])          e: `encoder/pasta/special_token_embedding` [L, n_s, d]
Other positions are untouched and the length does not change. The slot is the order of occurrence, not the
token type, so BERT's [CLS] is slot 0 and its two [SEP]s get different vectors (slots 1 and 2).
- Special ids: BERT [CLS] = 101 and [SEP] = 102; T5 EOS = 1. Padding (mask False) is never special.
- n_s: BERT 3 by default (pair tasks; the paper uses 2 for single-sentence tasks and NER, bind
  `num_special_tokens = 2` there to match its count, else the third vector never trains); T5 1.
- NOTE: a row with more than n_s special tokens gets no vector at the extra occurrences (silently: the
  count is data-dependent under jit). The official code instead asserts that the first row's count fits.
- T5 (§E(8)): the encoder only; the vector joins the residual stream at the block input (before the
  pre-attention RMSNorm). `relative_to_rms` scales it by the token's RMS, h += rms(h[b, t]) · Drop(e), so
  the offset is not drowned by T5's large residual norms; off by default (the paper's plain add).
  The decoder-start variant §E(8)(a) is not implemented (the decoder calls no layer_input_hook).
Counts (+ the BERT classifier head; the pooler stays frozen): BERT-base 18,432 (n_s = 2) / 27,648 (n_s = 3),
T5 1.1 base 9,216. Init N(0, 0.02), as HF's `_init_weights` gives the official embedding.
Needs per-layer calls: T5 with scan_layers=False.
"""
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers

Array = jax.Array
EMBEDDING_INIT = nn.initializers.normal(stddev=0.02)
DEFAULT_SPECIAL_TOKEN_IDS = {"bert": (101, 102), "t5": (1,)}  # [CLS], [SEP]; T5's EOS </s>
DEFAULT_NUM_SPECIAL_TOKENS = {"bert": 3, "t5": 1}


def special_token_slots(tokens: Array, mask: Array, special_token_ids: Sequence[int]) -> Array:
  """The occurrence index j of each special token, -1 elsewhere: tokens, mask [b, l] -> [b, l] int32."""
  special = jnp.isin(tokens, jnp.asarray(special_token_ids, tokens.dtype)) & mask.astype(bool)
  occurrence = jnp.cumsum(special, axis=1, dtype=jnp.int32) - 1  # j of the special token at or before t
  return jnp.where(special, occurrence, -1)


class Pasta(nn.Module):
  """Learned offsets on special-token positions at every layer's input (module docstring).

  Attributes:
    num_layers: L. num_special_tokens: n_s. embed_dim: d.
    special_token_ids: the ids counted as special tokens.
    dropout_rate: dropout on the added vectors (hidden dropout, 0.1).
    relative_to_rms: add rms(h[b, t]) · e instead of e.
  """
  num_layers: int
  num_special_tokens: int
  embed_dim: int
  special_token_ids: Sequence[int]
  dropout_rate: float = 0.1
  relative_to_rms: bool = False

  @nn.compact
  def __call__(self, h: Array, *, layer: int, state: None, context: dict,
               deterministic: bool = True) -> tuple[Array, None]:
    """h [b, l, d] entering `layer`; context 'tokens' and 'mask' [b, l] -> (h [b, l, d], state)."""
    embedding = layers.param_with_axes(
        self, "special_token_embedding", EMBEDDING_INIT, (self.num_layers, self.num_special_tokens, self.embed_dim),
        ("layers_hook", "special_tokens", "embed"))
    tokens, mask = context["tokens"], context["mask"]
    if tokens.shape != h.shape[:2] or mask.shape != tokens.shape:
      raise ValueError(f"PASTA needs one token per hidden position: tokens {tokens.shape}, mask {mask.shape}, "
                       f"hidden {h.shape[:2]}; it cannot follow a length-changing input_transform (prompts)")
    slots = special_token_slots(tokens, mask, self.special_token_ids)
    # NOTE: one_hot of -1 or of j >= n_s is all zeros: those positions get no vector.
    one_hot = jax.nn.one_hot(slots, self.num_special_tokens, dtype=jnp.float32)  # [b, l] -> [b, l, n_s]
    delta = jnp.einsum("bls,sd->bld", one_hot, embedding[layer])  # [b, l, n_s] -> [b, l, d]
    delta = nn.Dropout(self.dropout_rate)(delta, deterministic=deterministic)
    if self.relative_to_rms:
      h32 = h.astype(jnp.float32)
      delta = delta * jnp.sqrt(jnp.mean(jnp.square(h32), axis=-1, keepdims=True))  # rms(h[b, t]) · e
    return h + delta.astype(h.dtype), state


def pasta_factory(*, where: str, backbone: str, num_layers: int, embed_dim: int,
                  num_special_tokens: Optional[int] = None, special_token_ids: Optional[Sequence[int]] = None,
                  dropout_rate: float = 0.1, relative_to_rms: bool = False) -> Optional[Pasta]:
  """The `layer_input_hook` slot: `Pasta` named 'pasta' on the encoder, None elsewhere.

  Args:
    where / backbone / num_layers / embed_dim: from the backbone (models/slots.py).
    num_special_tokens: n_s, vectors per layer; None = the backbone's default (BERT 3, T5 1).
    special_token_ids: ids counted as special; None = BERT (101, 102), T5 (1,).
    dropout_rate: dropout on the added vectors. relative_to_rms: scale them by the token's RMS (§E(8)).
  """
  if where != "encoder":
    return None
  if backbone not in DEFAULT_SPECIAL_TOKEN_IDS:
    raise ValueError(f"PASTA has no defaults for backbone {backbone!r}; known: {sorted(DEFAULT_SPECIAL_TOKEN_IDS)}")
  num_special_tokens = DEFAULT_NUM_SPECIAL_TOKENS[backbone] if num_special_tokens is None else num_special_tokens
  special_token_ids = DEFAULT_SPECIAL_TOKEN_IDS[backbone] if special_token_ids is None else special_token_ids
  if num_special_tokens < 1 or not special_token_ids:
    raise ValueError(f"PASTA num_special_tokens={num_special_tokens} and special_token_ids="
                     f"{tuple(special_token_ids)}: need at least one of each")
  return Pasta(num_layers, num_special_tokens, embed_dim, tuple(special_token_ids), dropout_rate, relative_to_rms,
               name="pasta")
