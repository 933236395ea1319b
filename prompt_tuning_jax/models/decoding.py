"""Greedy and beam search for the T5 encoder-decoder: encode once, then one token per step through the KV cache.

Each search is one jit-compiled `jax.lax.while_loop`. Only the model and the sizes are static arguments
(token ids and `alpha` are traced), so a second call with equal shapes and an equal model reuses the program.

Shapes: b=batch, k=num_beams, l=encoder length (l' >= l with prompts), L=max_decode_length, V=vocab.
Outputs start with the first generated token (the decoder start token is dropped) and hold 0 after EOS.
"""
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
NEG_INF = -1.0e7  # NOTE: finite (as in t5x), so dead beams never produce NaNs in log-prob sums.


def brevity_penalty(alpha: float, length: Array) -> Array:
  """t5x / GNMT length penalty ((5 + length) / 6) ** alpha; scores are log-probs divided by it."""
  return ((5.0 + length) / 6.0) ** alpha


def _encode(model: nn.Module, params: dict, tokens: Array, prompt_index: Optional[Array]) -> tuple[Array, Array]:
  """[b, l] tokens -> (encoded [b, l', d], mask [b, l']); the mask comes from `encode`, so prompts count."""
  return model.apply({"params": params}, tokens, prompt_index=prompt_index, method="encode")


def _empty_cache(model: nn.Module, params: dict, encoded: Array, mask: Array, max_decode_length: int) -> dict:
  """A zeroed KV cache for batch encoded.shape[0] (cache_index 0); shapes come from an abstract decode call."""
  dummy = jnp.zeros((encoded.shape[0], max_decode_length), jnp.int32)
  _, shapes = jax.eval_shape(functools.partial(model.apply, max_decode_length=max_decode_length, decode=True,
                                               method="decode", mutable=["cache"]),
                             {"params": params}, encoded, mask, dummy)
  return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


def _step(model: nn.Module, params: dict, cache: dict, encoded: Array, mask: Array, tokens: Array, index: Array,
          max_decode_length: int) -> tuple[Array, dict]:
  """Feeds tokens [b, 1] at position `index` -> (next-token logits [b, V] float32, updated cache)."""
  positions = jnp.full(tokens.shape, index, jnp.int32)
  logits, updated = model.apply({"params": params, "cache": cache}, encoded, mask, tokens,
                                decoder_positions=positions, max_decode_length=max_decode_length, decode=True,
                                method="decode", mutable=["cache"])
  return logits[:, 0], updated["cache"]


@functools.partial(jax.jit, static_argnames=("model", "max_decode_length"))
def greedy_decode(model: nn.Module, params: dict, encoder_input_tokens: Array, *, max_decode_length: int,
                  eos_id: int = 1, decoder_start_token_id: int = 0,
                  prompt_index: Optional[Array] = None) -> Array:
  """Argmax decoding: encoder tokens [b, l] -> generated tokens [b, max_decode_length] (0 after EOS).

  Stops early once every row has emitted `eos_id` (a negative `eos_id` never matches: fixed-length decoding).
  `prompt_index` [b] is handed to `encode` (prompt banks).
  """
  if max_decode_length < 1:
    raise ValueError(f"greedy_decode needs max_decode_length >= 1, got {max_decode_length}")
  encoded, mask = _encode(model, params, encoder_input_tokens, prompt_index)
  b = encoded.shape[0]
  cache = _empty_cache(model, params, encoded, mask, max_decode_length)
  # [b, 1 + L]: column 0 holds the decoder start token, column i + 1 the token generated at step i.
  tokens = jnp.zeros((b, max_decode_length + 1), jnp.int32).at[:, 0].set(decoder_start_token_id)

  def cond(state):
    i, _, _, finished = state
    return (i < max_decode_length) & ~jnp.all(finished)

  def body(state):
    i, tokens, cache, finished = state
    current = jax.lax.dynamic_slice_in_dim(tokens, i, 1, axis=1)  # [b, 1]
    logits, cache = _step(model, params, cache, encoded, mask, current, i, max_decode_length)
    following = jnp.where(finished, 0, jnp.argmax(logits, axis=-1).astype(jnp.int32))  # [b]
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, following[:, None], i + 1, axis=1)
    return i + 1, tokens, cache, finished | (following == eos_id)

  state = (jnp.array(0, jnp.int32), tokens, cache, jnp.zeros((b,), bool))
  return jax.lax.while_loop(cond, body, state)[1][:, 1:]


def _gather_beams(x: Array, beam_indices: Array, batch_axis: int = 0) -> Array:
  """x [.., b*k, ...] (beams of one example adjacent) and indices [b, n] -> [.., b*n, ...]."""
  b, n = beam_indices.shape
  x = x.reshape(x.shape[:batch_axis] + (b, -1) + x.shape[batch_axis + 1:])  # [.., b, k, ...]
  index = beam_indices.reshape((1,) * batch_axis + (b, n) + (1,) * (x.ndim - batch_axis - 2))
  picked = jnp.take_along_axis(x, index, axis=batch_axis + 1)  # [.., b, n, ...]
  return picked.reshape(x.shape[:batch_axis] + (b * n,) + x.shape[batch_axis + 2:])


def _gather_cache(cache: dict, beam_indices: Array) -> dict:
  """Reorders the KV cache by beam; key/value leaves are [(layers,) b*k, L, n, h], indices are shared."""
  return jax.tree_util.tree_map(
      lambda x: _gather_beams(x, beam_indices, batch_axis=x.ndim - 4) if x.ndim >= 4 else x, cache)


@functools.partial(jax.jit, static_argnames=("model", "num_beams", "max_decode_length"))
def beam_search(model: nn.Module, params: dict, encoder_input_tokens: Array, *, num_beams: int,
                max_decode_length: int, eos_id: int = 1, alpha: float = 0.6, decoder_start_token_id: int = 0,
                prompt_index: Optional[Array] = None) -> tuple[Array, Array]:
  """t5x-style beam search: encoder tokens [b, l] -> (tokens [b, k, L] best first, scores [b, k]).

  A hypothesis ends at `eos_id` or at `max_decode_length` tokens; its score is its summed log-probability
  divided by `brevity_penalty(alpha, length)` (length counts the EOS). Each step takes the top 2k of k*V
  extensions: the top k that did not end stay live, and the ones that ended merge into the k finished.
  The loop stops once, in every example, no live beam can still beat the worst finished one.
  """
  if num_beams < 1 or max_decode_length < 1:
    raise ValueError(f"beam_search needs num_beams >= 1 and max_decode_length >= 1, got num_beams={num_beams}, "
                     f"max_decode_length={max_decode_length}")
  k, max_len = num_beams, max_decode_length
  encoded, mask = _encode(model, params, encoder_input_tokens, prompt_index)
  b = encoded.shape[0]
  encoded, mask = jnp.repeat(encoded, k, axis=0), jnp.repeat(mask, k, axis=0)  # [b, l', d] -> [b*k, l', d]
  cache = _empty_cache(model, params, encoded, mask, max_len)
  seqs = jnp.zeros((b, k, max_len + 1), jnp.int32).at[:, :, 0].set(decoder_start_token_id)
  live_log_probs = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1)), (b, 1))  # only beam 0 starts live
  finished_scores = jnp.full((b, k), NEG_INF)

  def cond(state):
    i, live_log_probs, _, finished_scores, _, _, finished_flags = state
    # Log-probs only fall, so a live beam's best reachable score uses the largest penalty still ahead.
    largest_penalty = jnp.maximum(brevity_penalty(alpha, i + 1.0), brevity_penalty(alpha, max_len))
    best_live = live_log_probs[:, 0] / largest_penalty
    worst_finished = jnp.min(jnp.where(finished_flags, finished_scores, NEG_INF), axis=1)
    return (i < max_len) & ~jnp.all(worst_finished > best_live)

  def body(state):
    i, live_log_probs, live_seqs, finished_scores, finished_seqs, cache, finished_flags = state
    current = jax.lax.dynamic_slice_in_dim(live_seqs, i, 1, axis=2).reshape(b * k, 1)
    logits, cache = _step(model, params, cache, encoded, mask, current, i, max_len)
    log_probs = jax.nn.log_softmax(logits)  # [b*k, V]
    vocab = log_probs.shape[-1]
    candidates = (live_log_probs[..., None] + log_probs.reshape(b, k, vocab)).reshape(b, k * vocab)
    top_log_probs, top_indices = jax.lax.top_k(candidates, 2 * k)  # [b, 2k]
    top_beams, top_ids = top_indices // vocab, (top_indices % vocab).astype(jnp.int32)
    top_seqs = jnp.take_along_axis(live_seqs, top_beams[..., None], axis=1)  # [b, 2k, L+1]
    top_seqs = jax.lax.dynamic_update_slice_in_dim(top_seqs, top_ids[..., None], i + 1, axis=2)
    ended = (top_ids == eos_id) | (i + 1 == max_len)  # [b, 2k]

    # Live: the best k candidates that did not end; the cache follows their source beams.
    live_log_probs, keep = jax.lax.top_k(top_log_probs + ended * NEG_INF, k)
    live_seqs = jnp.take_along_axis(top_seqs, keep[..., None], axis=1)
    cache = _gather_cache(cache, jnp.take_along_axis(top_beams, keep, axis=1))

    # Finished: merge the k finished so far with the candidates that ended now, keep the best k.
    new_scores = top_log_probs / brevity_penalty(alpha, i + 1.0) + (~ended) * NEG_INF
    all_scores = jnp.concatenate([finished_scores, new_scores], axis=1)  # [b, 3k]
    finished_scores, keep = jax.lax.top_k(all_scores, k)
    finished_seqs = jnp.take_along_axis(jnp.concatenate([finished_seqs, top_seqs], axis=1), keep[..., None], axis=1)
    finished_flags = jnp.take_along_axis(jnp.concatenate([finished_flags, ended], axis=1), keep, axis=1)
    return i + 1, live_log_probs, live_seqs, finished_scores, finished_seqs, cache, finished_flags

  state = (jnp.array(0, jnp.int32), live_log_probs, seqs, finished_scores, seqs, cache, jnp.zeros((b, k), bool))
  _, _, _, finished_scores, finished_seqs, _, _ = jax.lax.while_loop(cond, body, state)
  return finished_seqs[:, :, 1:], finished_scores
