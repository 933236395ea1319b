"""train/cost.py: FLOPs of a train step lowered on abstract values (nothing allocated, nothing run)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.bench import grid
from prompt_tuning_jax.models import bert, inputs, t5
from prompt_tuning_jax.peft import trainable
from prompt_tuning_jax.train import cost, optimizers

T5_TINY, BERT_TINY = grid.TINY["t5_tiny"], grid.TINY["bert_tiny"]  # only lowered: their size costs nothing


def test_flops_of_a_matmul_are_two_per_multiply_add():
  a, b = jax.ShapeDtypeStruct((8, 16), jnp.float32), jax.ShapeDtypeStruct((16, 4), jnp.float32)
  lowered = jax.jit(jnp.matmul).lower(a, b)
  assert cost.flops(lowered) == cost.flops(lowered.compile()) == 2 * 8 * 16 * 4


def test_abstract_batch_has_the_example_batch_shapes():
  for model, target_length in ((t5.T5(T5_TINY), 3), (bert.BertForSequenceClassification(BERT_TINY), 0)):
    batch = inputs.example_batch(model, 2, 8, max(target_length, 1))
    abstract = cost.abstract_batch(model, 2, 8, target_length)
    assert {k: (v.shape, v.dtype) for k, v in abstract.items()} == {k: (v.shape, v.dtype) for k, v in batch.items()}
  assert cost.abstract_batch(t5.T5(T5_TINY), 4, 16, 5)["decoder_target_tokens"].shape == (4, 5)
  with pytest.raises(ValueError, match="a T5 step needs target_length >= 1, got 0 .input_length=16."):
    cost.abstract_batch(t5.T5(T5_TINY), 4, 16, 0)


def test_the_lowered_step_trains_the_mask_and_runs_prepare_frozen():
  model = t5.T5(T5_TINY)
  optimizer = optimizers.build_optimizer(optimizers.adamw(1e-3))
  batch = cost.abstract_batch(model, 2, 8, 3)
  bitfit = functools.partial(trainable.trainable_mask, patterns=[r"(^|/)encoder_norm/scale$"])
  full = functools.partial(trainable.trainable_mask, train_all=True)
  bf16 = lambda frozen: jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), frozen)
  lowered = cost.lower_train_step(model, optimizer, bitfit, batch, prepare_frozen=bf16)
  (state, frozen, _, _), _ = lowered.args_info  # ArgInfo leaves: (args, kwargs) of step(state, frozen, batch, rng)
  assert [leaf.shape for leaf in jax.tree_util.tree_leaves(state.trainable)] == [(T5_TINY.embed_dim,)]
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(frozen)} == {np.dtype(jnp.bfloat16)}
  # The frozen weights' gradients are never formed, so the step costs less than full fine-tuning's.
  assert 0 < cost.flops(lowered) < cost.flops(cost.lower_train_step(model, optimizer, full, batch))
