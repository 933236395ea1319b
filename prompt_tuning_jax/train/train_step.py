"""A reusable jitted train step that differentiates only the trainable partition, and the losses.

  mask = trainable.trainable_mask(params)                      # gin-configured in the trainer
  optimizer = optimizers.build_optimizer(optimizers.prompt_tuning_optimizer())
  state, frozen = init_train_state(params, mask, optimizer)
  step = make_train_step(loss_fn_for(model), optimizer)
  state, metrics = step(state, frozen, batch, rng)             # batch formats: models/inputs.py

The state holds the trainable partition and its optimizer state; the frozen partition is a separate,
non-donated argument of the step. `jax.value_and_grad` runs over the trainable partition only, so no
gradient of a frozen weight is ever computed (only activation gradients flow through frozen layers), and
frozen leaves stay bit-identical. The state is donated: its buffers are reused for the new state.
"""
from typing import Callable, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from prompt_tuning_jax.models import bert, t5
from prompt_tuning_jax.models.inputs import IGNORE_LABEL
from prompt_tuning_jax.peft import trainable

Array = jax.Array
Metrics = dict[str, Array]
LossFn = Callable[[dict, dict, Optional[Array]], tuple[Array, Metrics]]
"""(params, batch, dropout_rng or None) -> (scalar loss, metrics); None = dropout off."""


@flax.struct.dataclass
class TrainState:
  """step: int32 scalar; trainable: the trainable partition; opt_state: the optimizer state over it."""
  step: Array
  trainable: dict
  opt_state: optax.OptState


def init_train_state(params: dict, mask: dict, optimizer: optax.GradientTransformation
                     ) -> tuple[TrainState, dict]:
  """params (plain or boxed) -> (TrainState at step 0, frozen partition).

  The state holds copies of the trainable leaves, so donating it never deletes the caller's arrays.
  """
  trainable_params, frozen = trainable.split(nn.meta.unbox(params), mask)
  trainable_params = jax.tree_util.tree_map(jnp.copy, trainable_params)
  if not jax.tree_util.tree_leaves(trainable_params):
    raise ValueError(f"nothing to train: the mask selects none of the {trainable.count(frozen)} parameters "
                     f"(no method bound, or trainable.trainable_mask.patterns match no path)")
  return TrainState(jnp.zeros((), jnp.int32), trainable_params, optimizer.init(trainable_params)), frozen


def train_step_fn(loss_fn: LossFn, optimizer: optax.GradientTransformation):
  """The pure `step(state, frozen, batch, rng) -> (state, metrics)`, to jit with shardings of one's own.

  rng None turns dropout off; the dropout rng of a step is `fold_in(rng, state.step)`. Metrics: the loss
  function's, plus `loss` and `grad_norm` (global norm of the trainable gradient).
  """
  def step(state: TrainState, frozen: dict, batch: dict, rng: Optional[Array]) -> tuple[TrainState, Metrics]:
    dropout_rng = None if rng is None else jax.random.fold_in(rng, state.step)

    def objective(trainable_params: dict) -> tuple[Array, Metrics]:
      return loss_fn(trainable.merge(trainable_params, frozen), batch, dropout_rng)

    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.trainable)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
    new_state = TrainState(state.step + 1, optax.apply_updates(state.trainable, updates), opt_state)
    return new_state, {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}

  return step


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, donate: bool = True):
  """`train_step_fn` jitted, the state donated (`donate`): `step(state, frozen, batch, rng)`."""
  return jax.jit(train_step_fn(loss_fn, optimizer), donate_argnums=(0,) if donate else ())


def _mean(values: Array, weights: Array) -> Array:
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def text_to_text_loss(logits: Array, targets: Array, weights: Optional[Array] = None,
                      z_loss: float = 1e-4) -> tuple[Array, Metrics]:
  """Token cross-entropy + t5x's z-loss `z_loss * log(Z)^2`, averaged over weighted target tokens.

  Args:
    logits: [b, t, vocab]. targets: [b, t] ids. weights: [b, t]; None = `targets > 0` (padding is 0).
  NOTE: t5x sums over tokens by default; the mean only rescales the gradient, which Adafactor's and
  Adam's normalised updates ignore, and keeps the loss comparable across batch shapes.
  """
  weights = (targets > 0).astype(jnp.float32) if weights is None else weights.astype(jnp.float32)
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)  # [b, t]
  cross_entropy = log_z - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  loss = _mean(cross_entropy + z_loss * jnp.square(log_z), weights)
  accuracy = _mean((jnp.argmax(logits, -1) == targets).astype(jnp.float32), weights)
  return loss, {"cross_entropy": _mean(cross_entropy, weights), "accuracy": accuracy}


def classification_loss(logits: Array, labels: Array) -> tuple[Array, Metrics]:
  """Cross-entropy on class logits; labels equal to -100 are ignored (HF).

  Args:
    logits: [b, C] (sequence classification) or [b, l, C] (token classification: one row per input token;
      the head has dropped any rows a prompt inserted, models/bert.py).
    labels: [b] or [b, l].
  """
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f"logits {tuple(logits.shape)} do not fit labels {tuple(labels.shape)}: expected logits "
                     f"{tuple(labels.shape) + tuple(logits.shape[-1:])}")
  weights = (labels != IGNORE_LABEL).astype(jnp.float32)
  safe_labels = jnp.where(labels == IGNORE_LABEL, 0, labels)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  cross_entropy = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  accuracy = _mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), weights)
  return _mean(cross_entropy, weights), {"accuracy": accuracy}


def _rngs(dropout_rng: Optional[Array]) -> dict[str, Array]:
  return {} if dropout_rng is None else {"dropout": dropout_rng}


def loss_fn_for(model: nn.Module, z_loss: float = 1e-4) -> LossFn:
  """The loss of a backbone: T5 `text_to_text_loss`; BERT heads `classification_loss`.

  Batches as models/inputs.py; an optional `prompt_index` [b] picks prompts from a bank.
  """
  if isinstance(model, t5.T5):
    def t5_loss(params: dict, batch: dict, dropout_rng: Optional[Array]) -> tuple[Array, Metrics]:
      logits = model.apply({"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                           prompt_index=batch.get("prompt_index"), enable_dropout=dropout_rng is not None,
                           rngs=_rngs(dropout_rng))
      return text_to_text_loss(logits, batch["decoder_target_tokens"], batch.get("decoder_loss_weights"), z_loss)
    return t5_loss
  if isinstance(model, tuple(bert.HEADS.values())):
    def bert_loss(params: dict, batch: dict, dropout_rng: Optional[Array]) -> tuple[Array, Metrics]:
      logits = model.apply({"params": params}, batch["input_ids"], batch.get("attention_mask"),
                           batch.get("token_type_ids"), prompt_index=batch.get("prompt_index"),
                           enable_dropout=dropout_rng is not None, rngs=_rngs(dropout_rng))
      return classification_loss(logits, batch["labels"])
    return bert_loss
  raise TypeError(f"no loss for {type(model).__name__}; known: T5, "
                  f"{', '.join(cls.__name__ for cls in bert.HEADS.values())}")

