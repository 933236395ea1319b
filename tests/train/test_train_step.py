"""The train step (only the trainable partition is differentiated), the losses and the optimizers.

Every shipped method is trained three steps in tests/peft/test_methods_smoke.py; here the step's own
contract is checked against independent references, and the FLOPs claim of DESIGN.md is measured.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.models import inputs
from prompt_tuning_jax.peft import trainable
from prompt_tuning_jax.train import cost, optimizers, train_step

TINY_T5 = [f"t5_config.preset.{k} = {v}" for k, v in dict(
    vocab_size=128, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64, num_encoder_layers=2,
    num_decoder_layers=2, dropout_rate=0.1).items()]


def build(method_file, bindings=TINY_T5, model_file="models/t5_1_1_small.gin"):
  gin_utils.parse_gin([model_file, method_file], bindings)
  model = gin_utils.configured_macro("MODEL")
  args, kwargs = inputs.example_inputs(model)
  params = nn.meta.unbox(model.init(jax.random.key(0), *args, **kwargs)["params"])
  return model, params, gin_utils.configured(trainable.trainable_mask)(params)


def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_text_to_text_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits, targets = rng.normal(size=(2, 3, 7)).astype(np.float32), np.array([[3, 1, 0], [2, 6, 1]])
  loss, metrics = train_step.text_to_text_loss(jnp.asarray(logits), jnp.asarray(targets), z_loss=1e-4)
  log_z = np.log(np.exp(logits).sum(-1))
  ce = -np.take_along_axis(np_log_softmax(logits), targets[..., None], -1)[..., 0]
  real = targets > 0  # padding (0) is not a target
  np.testing.assert_allclose(loss, (ce + 1e-4 * log_z ** 2)[real].mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics["cross_entropy"], ce[real].mean(), rtol=1e-6)
  weights = np.array([[1, 0, 0], [1, 1, 0]], np.float32)
  loss, _ = train_step.text_to_text_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), 0.0)
  np.testing.assert_allclose(loss, (ce * weights).sum() / 3, rtol=1e-6)


def test_classification_losses_match_numpy():
  rng = np.random.default_rng(1)
  logits, labels = rng.normal(size=(4, 3)).astype(np.float32), np.array([0, 2, 1, 2])
  loss, metrics = train_step.classification_loss(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(loss, -np_log_softmax(logits)[np.arange(4), labels].mean(), rtol=1e-6)
  assert float(metrics["accuracy"]) == (logits.argmax(-1) == labels).mean()
  # Token classification with ignored labels (-100); the head returns one row per input token (a prompt's rows
  # are dropped by the model: tests/peft/test_prompts.py), so logits with rows left over are refused.
  token_logits = rng.normal(size=(2, 4, 3)).astype(np.float32)
  token_labels = np.array([[-100, 1, 2, -100], [0, 0, -100, -100]])
  loss, _ = train_step.classification_loss(jnp.asarray(token_logits), jnp.asarray(token_labels))
  keep = token_labels != -100
  expected = -np.take_along_axis(np_log_softmax(token_logits), np.where(keep, token_labels, 0)[..., None], -1)
  np.testing.assert_allclose(loss, expected[..., 0][keep].mean(), rtol=1e-6)
  with_prompt_rows = jnp.asarray(rng.normal(size=(2, 6, 3)).astype(np.float32))
  with pytest.raises(ValueError, match=r"logits \(2, 6, 3\) do not fit labels \(2, 4\): expected logits \(2, 4, 3\)"):
    train_step.classification_loss(with_prompt_rows, jnp.asarray(token_labels))


@pytest.mark.slow
def test_step_equals_full_gradient_restricted_to_the_trainable_leaves():
  model, params, mask = build("methods/prompt_tuning_random.gin")
  loss_fn = train_step.loss_fn_for(model)
  batch = inputs.example_batch(model)
  optimizer = optimizers.build_optimizer(optimizers.prompt_tuning_optimizer())
  state, frozen = train_step.init_train_state(params, mask, optimizer)
  new_state, metrics = train_step.make_train_step(loss_fn, optimizer)(state, frozen, batch, None)
  # Reference: the gradient of the whole tree, then optax on the prompt alone.
  (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, batch, None)
  prompt = params["encoder"]["prompt"]
  updates, _ = optimizer.update({"encoder": {"prompt": grads["encoder"]["prompt"]}},
                                optimizer.init({"encoder": {"prompt": prompt}}), {"encoder": {"prompt": prompt}})
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
  np.testing.assert_allclose(new_state.trainable["encoder"]["prompt"]["prompt"],
                             optax.apply_updates(prompt, updates["encoder"]["prompt"])["prompt"], atol=1e-6)
  assert int(new_state.step) == 1


@pytest.mark.slow
def test_state_holds_only_trainable_leaves_and_is_donated():
  model, params, mask = build("methods/prompt_tuning_random.gin")
  optimizer = optimizers.build_optimizer(optax.adam(1e-2))
  state, frozen = train_step.init_train_state(params, mask, optimizer)
  n_trainable = trainable.count(params, mask)
  assert set(flatten_params(state.trainable)) == {"encoder/prompt/prompt"}
  opt_sizes = sum(x.size for x in jax.tree_util.tree_leaves(state.opt_state))
  assert opt_sizes == 2 * n_trainable + 1  # Adam: mu, nu and a step count; nothing for frozen leaves
  step = train_step.make_train_step(train_step.loss_fn_for(model), optimizer)
  old = state
  state, _ = step(state, frozen, inputs.example_batch(model), None)
  assert old.trainable["encoder"]["prompt"]["prompt"].is_deleted()  # donated
  assert not params["encoder"]["prompt"]["prompt"].is_deleted()  # the state held a copy
  assert not any(x.is_deleted() for x in jax.tree_util.tree_leaves(frozen))


@pytest.mark.slow
def test_dropout_rng_is_used_and_reproducible():
  model, params, mask = build("methods/prompt_tuning_random.gin")
  optimizer = optax.sgd(0.0)
  state, frozen = train_step.init_train_state(params, mask, optimizer)
  step = train_step.make_train_step(train_step.loss_fn_for(model), optimizer, donate=False)
  batch = inputs.example_batch(model)
  losses = [float(step(state, frozen, batch, rng)[1]["loss"]) for rng in (None, jax.random.key(0),
                                                                         jax.random.key(0), jax.random.key(1))]
  assert losses[1] == losses[2] and len({losses[0], losses[1], losses[3]}) == 3


def test_nothing_to_train_is_an_error():
  _, params, _ = build("methods/prompt_tuning_random.gin")
  with pytest.raises(ValueError, match="nothing to train.*patterns"):
    train_step.init_train_state(params, trainable.trainable_mask(params, patterns=[]), optax.sgd(1.0))


def test_weight_decay_conventions():
  params = {"fl_units": {"wi": jnp.ones((2, 3)), "bias": jnp.ones(3)}, "layer_norm": {"scale": jnp.ones(3)}}
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

  def one_step(optimizer):
    updates, _ = optimizer.update(zeros, optimizer.init(params), params)
    return optax.apply_updates(params, updates)

  # t5x / Lester: Adafactor decay is param * (1 - wd), not scaled by the learning rate.
  after = one_step(optimizers.prompt_tuning_optimizer())
  np.testing.assert_allclose(after["fl_units"]["wi"], 1 - 1e-5, rtol=1e-7)
  # bert4keras (FL-tuning): w -= lr * wd * w, and never on names with Norm or bias.
  after = one_step(optimizers.fl_tuning_optimizer(learning_rate=0.1))
  np.testing.assert_allclose(after["fl_units"]["wi"], 1 - 0.1 * 0.01, rtol=1e-7)
  np.testing.assert_array_equal(after["fl_units"]["bias"], 1.0)
  np.testing.assert_array_equal(after["layer_norm"]["scale"], 1.0)
  gates = {"cell": {"forget_bias": jnp.ones(3), "forget_kernel": jnp.ones(3)}}  # GPC's named biases: no decay
  mask = optimizers.decay_mask()(gates)["cell"]
  assert not mask["forget_bias"] and mask["forget_kernel"]


def test_gpc_learning_rates_and_schedules_and_clipping():
  params = {"prompt": {"prompt": jnp.zeros(2)}, "gpc": {"cell": {"forget_kernel": jnp.zeros(2)}}}
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  optimizer = optimizers.gpc_optimizer(prompt_learning_rate=1e-2, cell_learning_rate=1e-3)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  np.testing.assert_allclose(updates["prompt"]["prompt"], -1e-2, rtol=1e-4)  # Adam's first step: -lr * sign
  np.testing.assert_allclose(updates["gpc"]["cell"]["forget_kernel"], -1e-3, rtol=1e-4)
  schedule = optimizers.linear_decay(1.0, total_steps=100, warmup_fraction=0.1)
  np.testing.assert_allclose([schedule(s) for s in (0, 5, 10, 55, 100)], [0, 0.5, 1, 0.5, 0], atol=1e-6)
  clipped = optimizers.build_optimizer(optax.sgd(1.0), max_grad_norm=1.0)
  updates, _ = clipped.update(grads, clipped.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="warmup of 100 steps"):
    optimizers.linear_decay(1.0, total_steps=100, warmup_steps=100)


def test_head_learning_rate_of_its_own_and_a_trained_pooler():
  params = {"bert": {"pooler": {"kernel": jnp.zeros(2)}, "layers_0": {"lora_query": {"a": jnp.zeros(2)}}},
            "classifier": {"kernel": jnp.zeros(2), "bias": jnp.zeros(2)}}
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  optimizer = optimizers.with_head(optimizers.adamw(1e-4, weight_decay=0.0), optimizers.adamw(3e-3, weight_decay=0.0))
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  np.testing.assert_allclose(updates["bert"]["layers_0"]["lora_query"]["a"], -1e-4, rtol=1e-4)  # -lr * sign
  for leaf in (updates["classifier"]["kernel"], updates["classifier"]["bias"], updates["bert"]["pooler"]["kernel"]):
    np.testing.assert_allclose(leaf, -3e-3, rtol=1e-4)
  mask = trainable.trainable_mask(params, extra_patterns=[r"(^|/)pooler/"])
  assert flatten_params(mask) == {"bert/pooler/kernel": True, "bert/layers_0/lora_query/a": True,
                                  "classifier/kernel": True, "classifier/bias": True}
  assert not trainable.trainable_mask(params)["bert"]["pooler"]["kernel"]  # frozen unless a run adds it


def _step_flops(method_file, encoder_length, batch_size=8, decoder_length=16):
  """XLA's FLOP count of one train step on the real t5_1_1_small shapes, from abstract values only."""
  gin_utils.parse_gin(["models/t5_1_1_small.gin", method_file])
  model = gin_utils.configured_macro("MODEL")
  optimizer = optimizers.prompt_tuning_optimizer()  # the same optimizer for both, per trained parameter
  lowered = cost.lower_train_step(model, optimizer, gin_utils.configured(trainable.trainable_mask),
                                  cost.abstract_batch(model, batch_size, encoder_length, decoder_length))
  return cost.flops(lowered), cost.flops(lowered.compile())


@pytest.mark.slow
def test_prompt_tuning_step_costs_two_thirds_of_full_finetuning():
  # Same encoder sequence for both: 28 text tokens + 100 prompt rows vs 128 text tokens.
  prompt = _step_flops("methods/prompt_tuning_random.gin", encoder_length=28)
  full = _step_flops("methods/full_finetuning.gin", encoder_length=128)
  traced, compiled = prompt[0] / full[0], prompt[1] / full[1]
  print(f"prompt-tuning / full fine-tuning step FLOPs: traced {traced:.3f}, compiled {compiled:.3f}")
  # The traced program (before XLA's dead-code elimination) already has no frozen-weight gradient.
  assert traced <= 0.72 and compiled <= 0.72
