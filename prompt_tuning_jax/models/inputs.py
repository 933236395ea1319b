"""Example inputs per backbone, so `model.init`, `jax.eval_shape` and smoke tests need no backbone code.

  args, kwargs = example_inputs(model)
  abstract = jax.eval_shape(model.init, jax.random.key(0), *args, **kwargs)

`example_batch` makes a random training batch in the format the losses of train/train_step.py read:
  T5 (t5x feature names): encoder_input_tokens [b, l], decoder_input_tokens [b, t],
      decoder_target_tokens [b, t], decoder_loss_weights [b, t] (1 on real target tokens)
  BERT: input_ids [b, l], attention_mask [b, l], token_type_ids [b, l], and labels: [b] for sequence
      classification, [b, l] for token classification (-100 = ignored, as in HF)
`model_inputs` keeps the features a model reads to score or decode (MODEL_INPUT_KEYS: no labels or targets);
`abstract_params` is the parameter tree as shapes (`jax.eval_shape` of `model.init`, nothing allocated).
"""
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax.models import bert, t5

# NOTE: the ids are 1 (not 0 = padding), so every position is real and every code path runs.
ENCODER_LENGTH = 4
DECODER_LENGTH = 2
T5_EOS_ID = 1
BERT_CLS_ID, BERT_SEP_ID = 101, 102  # uncased WordPiece; a tiny BERT's vocab_size must exceed 102
IGNORE_LABEL = -100
MODEL_INPUT_KEYS = ("encoder_input_tokens", "input_ids", "attention_mask", "token_type_ids")
"""The batch features a model reads when it scores or decodes: T5's encoder tokens, BERT's three inputs."""


def _kind(model: nn.Module) -> str:
  if isinstance(model, t5.T5):
    return "t5"
  if isinstance(model, bert.BertForTokenClassification):
    return "bert_tokens"
  if isinstance(model, (bert.BertModel, bert.BertForSequenceClassification)):
    return "bert"
  raise TypeError(f"unknown backbone {type(model).__name__}; known: T5, BertModel, "
                  f"{', '.join(cls.__name__ for cls in bert.HEADS.values())}")


def example_inputs(model: nn.Module, batch_size: int = 1) -> tuple[tuple[Any, ...], dict[str, Any]]:
  """(args, kwargs) for `model.init(rng, *args, **kwargs)`.

  T5: encoder tokens [b, 4] and decoder tokens [b, 2]. BERT (base model or any head): input_ids [b, 4].
  """
  if _kind(model) == "t5":
    return (jnp.ones((batch_size, ENCODER_LENGTH), jnp.int32),
            jnp.ones((batch_size, DECODER_LENGTH), jnp.int32)), {}
  return (jnp.ones((batch_size, ENCODER_LENGTH), jnp.int32),), {}


def abstract_params(model: nn.Module) -> dict:
  """The model's parameter tree, unboxed, with jax.ShapeDtypeStruct leaves: `model.init` on `example_inputs`
  under `jax.eval_shape`, so nothing is allocated (XXL sizes too)."""
  args, kwargs = example_inputs(model)
  return jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.key(0), *args, **kwargs)["params"]))


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
  """A batch's MODEL_INPUT_KEYS features (each [b, l]); labels, targets and other features are left out."""
  return {k: v for k, v in batch.items() if k in MODEL_INPUT_KEYS}


def example_batch(model: nn.Module, batch_size: int = 2, length: int = 8, target_length: int = 4,
                  seed: int = 0) -> dict[str, np.ndarray]:
  """A random batch (module docstring formats); the last example is padded from half its length on.

  T5 inputs and targets end with EOS; BERT inputs are `[CLS] ... [SEP]`.
  """
  kind = _kind(model)
  rng = np.random.default_rng(seed)
  vocab = model.config.vocab_size
  lengths = np.full(batch_size, length)
  lengths[-1] = max(3, length // 2)
  real = np.arange(length)[None, :] < lengths[:, None]  # [b, l]
  tokens = np.where(real, rng.integers(BERT_SEP_ID + 1 if kind != "t5" else 2, vocab, (batch_size, length)), 0)
  last = (np.arange(batch_size), lengths - 1)
  if kind == "t5":
    tokens[last] = T5_EOS_ID
    targets = rng.integers(2, vocab, (batch_size, target_length)).astype(np.int32)
    targets[:, -1] = T5_EOS_ID
    return {"encoder_input_tokens": tokens.astype(np.int32),
            "decoder_input_tokens": np.asarray(t5.shift_right(targets)),
            "decoder_target_tokens": targets,
            "decoder_loss_weights": np.ones((batch_size, target_length), np.float32)}
  if vocab <= BERT_SEP_ID + 1:
    raise ValueError(f"example_batch: BERT vocab_size={vocab} must exceed [SEP] id {BERT_SEP_ID} + 1")
  tokens[:, 0], tokens[last] = BERT_CLS_ID, BERT_SEP_ID
  num_labels = model.config.num_labels
  if kind == "bert_tokens":
    labels = np.where(real, rng.integers(0, num_labels, (batch_size, length)), IGNORE_LABEL)
  else:
    labels = rng.integers(0, num_labels, (batch_size,))
  return {"input_ids": tokens.astype(np.int32), "attention_mask": real.astype(np.int32),
          "token_type_ids": np.zeros_like(tokens, np.int32), "labels": labels.astype(np.int32)}
