"""Rank classification: score every label string, take the best (Lester et al.'s and T5's classification eval).

T5: each label string becomes target tokens (with EOS); its score is the summed log-probability of those
tokens given the input, teacher-forced. The encoder runs once per example; the C candidates are decoded
against the repeated encoder output, so a batch costs one encoder pass [b, l] and one decoder pass [b*C, t].
BERT classifiers: the analogue is the head's log-softmax over its classes (`classifier_scores`), per token
for a token-classification head.

  labels = label_token_matrix(vocabulary, registry.label_strings(task))     # [C, t]
  scores = rank_scores(model, params, batch['encoder_input_tokens'], labels)  # [b, C]
  predicted = scores.argmax(-1)                                             # ids into the label strings
"""
import functools
from typing import Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import seqio

from prompt_tuning_jax.models import t5

Array = jax.Array


def label_token_matrix(vocabulary: seqio.Vocabulary, label_strings: Sequence[str],
                       length: Optional[int] = None) -> np.ndarray:
  """Label strings -> target tokens [C, t] int32: each label's pieces + EOS, then 0-padding.

  Args:
    vocabulary: the task's targets vocabulary (its `eos_id` ends every row).
    label_strings: C labels in id order (`tasks.registry.label_strings`).
    length: t; default the longest label (+ EOS).
  """
  if not label_strings:
    raise ValueError("label_token_matrix needs at least one label string, got none")
  rows = [list(vocabulary.encode(label)) + [vocabulary.eos_id] for label in label_strings]
  longest = max(len(r) for r in rows)
  length = longest if length is None else length
  if longest > length:
    label = label_strings[max(range(len(rows)), key=lambda i: len(rows[i]))]
    raise ValueError(f"label {label!r} needs {longest} target tokens (with EOS), more than length={length}")
  tokens = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    tokens[i, :len(row)] = row
  return tokens


def target_log_probs(logits: Array, targets: Array, length_normalize: bool = False) -> Array:
  """Logits [n, t, V] and targets [n, t] (0 = padding) -> summed target-token log-probs [n].

  With `length_normalize`, the sum is divided by the number of real target tokens.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))  # [n, t, V]
  picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [n, t]
  weights = (targets != 0).astype(jnp.float32)
  total = jnp.sum(picked * weights, axis=-1)  # [n]
  return total / jnp.maximum(jnp.sum(weights, axis=-1), 1.0) if length_normalize else total


@functools.partial(jax.jit, static_argnames=("model", "length_normalize"))
def rank_scores(model: nn.Module, params: dict, encoder_input_tokens: Array, label_tokens: Array,
                prompt_index: Optional[Array] = None, length_normalize: bool = False) -> Array:
  """Log-probability of every label for every example: tokens [b, l], labels [C, t] -> scores [b, C].

  Args:
    model: a T5 (static: equal models reuse the compiled program).
    params: its parameters (plain, unboxed).
    encoder_input_tokens: [b, l], 0 = padding.
    label_tokens: [C, t] from `label_token_matrix`.
    prompt_index: [b] prompt of each example in a prompt bank; None = prompt 0.
    length_normalize: divide each label's score by its number of tokens (EOS included).
  """
  b, num_labels = encoder_input_tokens.shape[0], label_tokens.shape[0]
  encoded, mask = model.apply({"params": params}, encoder_input_tokens, prompt_index=prompt_index,
                              method="encode")  # [b, l', d], [b, l']
  encoded, mask = jnp.repeat(encoded, num_labels, axis=0), jnp.repeat(mask, num_labels, axis=0)  # -> [b*C, ...]
  targets = jnp.tile(label_tokens, (b, 1))  # [C, t] -> [b*C, t]; row i*C + c is label c of example i
  logits = model.apply({"params": params}, encoded, mask, t5.shift_right(targets), method="decode")
  return target_log_probs(logits, targets, length_normalize).reshape(b, num_labels)  # [b*C] -> [b, C]


@functools.partial(jax.jit, static_argnames=("model",))
def classifier_scores(model: nn.Module, params: dict, input_ids: Array, attention_mask: Array,
                      token_type_ids: Array, prompt_index: Optional[Array] = None) -> Array:
  """A BERT classifier's class log-probs: ids / masks / types [b, l] -> [b, num_labels] (sequence head) or
  [b, l, num_labels] (token head: one row per input token, models/bert.py)."""
  logits = model.apply({"params": params}, input_ids, attention_mask, token_type_ids, prompt_index=prompt_index)
  return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def score_batch(model: nn.Module, params: dict, batch: Mapping[str, Array], label_tokens: Optional[Array] = None,
                prompt_index: Optional[Array] = None, length_normalize: bool = False) -> Array:
  """Class scores [b, C] ([b, l, C] for a token head) of a model batch (models/inputs.py formats): `rank_scores`
  on T5, else the head's."""
  if isinstance(model, t5.T5):
    if label_tokens is None:
      raise ValueError("rank classification with a T5 model needs label_tokens [C, t]; got None")
    return rank_scores(model, params, batch["encoder_input_tokens"], label_tokens, prompt_index, length_normalize)
  return classifier_scores(model, params, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                           prompt_index)
