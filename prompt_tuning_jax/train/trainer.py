"""The training loop: frozen base + PEFT params, masked optimizer, PEFT-only checkpoints, periodic eval.

  final = train(model=..., model_dir=..., train_steps=..., batch_size=..., train_data=..., optimizer=...,
                evaluate=..., checkpointing=Checkpointing(period=500, keep_last=1))

Resuming is exact: the data order is a pure function of (seed, batches consumed), the dropout rng of step
t is fold_in(rng, t), and a checkpoint holds the trainable leaves, optimizer state, step and data position.
Run the same command again after a crash (even SIGKILL) and the final parameters are bit-identical.
The frozen base always comes from `initial_checkpoint_path` (or the seeded init when there is none).
"""
import logging
import math
import os
import time
from typing import Any, Callable, Iterator, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
import optax
import tqdm

from prompt_tuning_jax.checkpoints.initial import load_initial_checkpoint
from prompt_tuning_jax.checkpoints.peft_io import Checkpointing
from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning_jax.models import inputs as model_inputs
from prompt_tuning_jax.peft import diagnostics, trainable
from prompt_tuning_jax.train import outputs, partitioning, train_step
from prompt_tuning_jax.train.summaries import SummaryWriter

log = logging.getLogger(__name__)
TrainData = Callable[[int, int, slice], Iterator[dict]]
"""(global batch_size, batches_to_skip, rows) -> iterator of numpy batches: `rows` of each global batch, the
global batches deterministic for a given skip and the same whatever the number of processes."""
Evaluate = Callable[..., dict]
"""(model, params, mesh=...) -> {metric: float}; the params live on `mesh` (None: one device)."""


class TrainingDivergedError(FloatingPointError):
  """The loss became NaN or Inf; the last good checkpoint is left untouched."""


def initial_params(model: nn.Module, seed: int, initial_checkpoint_path: Optional[str]) -> dict:
  """Seeded init of every parameter, with the base (non-PEFT) leaves replaced from the checkpoint."""
  args, kwargs = model_inputs.example_inputs(model)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(seed), *args, **kwargs)["params"])
  if not initial_checkpoint_path:
    return params
  base = flatten_params(load_initial_checkpoint(initial_checkpoint_path, model))
  flat = flatten_params(params)
  missing = sorted(set(base) - set(flat))
  if missing:
    raise ValueError(f"{initial_checkpoint_path}: {missing[0]} is not a parameter of the configured model")
  flat.update({k: jnp.asarray(v, flat[k].dtype) for k, v in base.items()})
  return unflatten_params(flat)


def train(*, model: nn.Module, model_dir: str, train_steps: int, batch_size: int, train_data: TrainData,
          optimizer: optax.GradientTransformation, evaluate: Optional[Evaluate] = None,
          initial_checkpoint_path: Optional[str] = None,
          mask_fn: Callable[[dict], dict] = trainable.trainable_mask, eval_period: int = 0,
          checkpointing: Checkpointing = Checkpointing(), seed: int = 0, dropout: bool = True,
          num_partitions: int = 1,
          metadata: Optional[dict] = None, show_progress: bool = True,
          prepare_params: Optional[Callable[[dict], dict]] = None) -> dict[str, Any]:
  """Trains the PEFT parameters of `model`; returns the last train and eval metrics.

  Args:
    model: a T5 or BERT head module with its method slots bound.
    model_dir: checkpoints (model_dir/checkpoints), TensorBoard scalars, metrics.jsonl. Train scalars each
      step: the loss function's metrics, loss, grad_norm, examples_per_second, compiles (distinct batch shapes so
      far), and peft.diagnostics.module_norms (`norm/<module>`, `prompt_row_norm`).
    train_steps / batch_size: total optimizer steps and the global batch size.
    train_data: see `TrainData`; each process feeds its rows of every global batch (partitioning.host_rows).
    evaluate: called every `eval_period` steps and at the end; its metrics go to TensorBoard and
      metrics.jsonl, and `checkpointing.best_metric` among them ranks checkpoints.
    optimizer: over the trainable partition (train/optimizers.py: each method's).
    mask_fn: params -> trainable mask (peft/trainable.py; gin-configured).
    checkpointing: how often checkpoints are saved and which are kept (checkpoints/peft_io.py).
    dropout: train with dropout (the model's rates).
    num_partitions: size of the mesh's 'model' axis; the rest of the devices form 'data'.
    metadata: stored with every checkpoint (model, method, vocabulary, feature lengths ...).
    prepare_params: applied to the full params after the frozen base is loaded and before the split, e.g. a
      method's init step that draws from the frozen token table (runs.prepare_params).
  """
  os.makedirs(model_dir, exist_ok=True)
  mesh = partitioning.create_mesh(num_partitions)
  params = initial_params(model, seed, initial_checkpoint_path)
  if prepare_params is not None:
    params = prepare_params(params)
  state, frozen = train_step.init_train_state(params, mask_fn(params), optimizer)
  del params
  state, frozen = _place(model, mesh, state, frozen)
  manager = checkpointing.manager(os.path.join(model_dir, "checkpoints"))
  restored = manager.restore_latest({"trainable": state.trainable, "opt_state": state.opt_state})
  start = 0
  if restored is not None:
    ckpt, meta = restored
    start = int(meta["step"])
    state = train_step.TrainState(np.asarray(start, np.int32), ckpt["trainable"], ckpt["opt_state"])
    log.info("resuming from step %d (%s)", start, manager.directory)
  step_fn = train_step.make_train_step(train_step.loss_fn_for(model), optimizer)
  rng = jax.random.key(seed + 1) if dropout else None
  rows = partitioning.host_rows(mesh, batch_size)
  if jax.process_count() > 1:
    log.info("process %d of %d feeds rows [%d, %d) of each global batch of %d", jax.process_index(),
             jax.process_count(), rows.start, rows.stop, batch_size)
  batches = train_data(batch_size, start, rows)
  writer = SummaryWriter(model_dir, start)
  metadata = {**(metadata or {}), "batch_size": batch_size, "seed": seed}
  last_metrics: dict[str, Any] = {}
  progress = tqdm.tqdm(total=train_steps, initial=start, unit="step", dynamic_ncols=True,
                       disable=not (show_progress and outputs.is_primary_host()))
  shapes: set[tuple] = set()  # one compile of the step per distinct batch shape (length buckets)
  tic = time.perf_counter()
  for step in range(start + 1, train_steps + 1):
    host_batch = next(batches)
    shape = tuple(sorted((k, np.shape(v)) for k, v in host_batch.items()))
    if shape not in shapes:
      shapes.add(shape)
      log.info("train step: compile %d, for batch shapes %s", len(shapes), dict(shape))
    batch = partitioning.shard_batch(host_batch, mesh, batch_size)
    with jax.set_mesh(mesh):
      state, metrics = step_fn(state, frozen, batch, rng)
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
      raise TrainingDivergedError(f"loss is {loss} at step {step}; stopped. The last good checkpoint "
                                  f"(step {max(manager.steps(), default='none')}) in {manager.directory} is kept")
    toc = time.perf_counter()
    last_metrics = {k: float(v) for k, v in metrics.items()}
    last_metrics["examples_per_second"] = batch_size / max(toc - tic, 1e-9)
    last_metrics["compiles"] = len(shapes)
    last_metrics.update(diagnostics.module_norms(state.trainable))  # e.g. a prompt growing away (collapse)
    tic = toc
    writer.scalars("train", step, last_metrics)
    progress.set_postfix(loss=f"{loss:.4f}", ex_s=f"{last_metrics['examples_per_second']:.1f}")
    progress.update(1)
    eval_metrics = None
    if evaluate is not None and (step == train_steps or (eval_period and step % eval_period == 0)):
      eval_metrics = _numbers(evaluate(model, trainable.merge(state.trainable, frozen),
                                       mesh=mesh if mesh.size > 1 else None))
      writer.scalars("eval", step, eval_metrics)
      last_metrics.update({f"eval/{k}": v for k, v in eval_metrics.items()})
    if step == train_steps or step % checkpointing.period == 0:
      manager.save(step, {"trainable": state.trainable, "opt_state": state.opt_state},
                   {**metadata, "data_position": step * batch_size}, metrics=eval_metrics)
    elif eval_metrics is not None and step in manager.steps():
      manager.update_metrics(step, eval_metrics)
    if eval_metrics is not None:
      tic = time.perf_counter()  # evaluation time is not training throughput
  progress.close()
  writer.close()
  return last_metrics


def _numbers(metrics: dict) -> dict[str, float]:
  """The numeric entries of an evaluator's result (it also reports e.g. 'scoring': 'rank')."""
  return {k: float(v) for k, v in metrics.items()
          if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}


def _place(model: nn.Module, mesh, state: train_step.TrainState, frozen: dict):
  """Puts the train state and the frozen partition onto the mesh: parameters by the logical axis rules, the
  step and the optimizer state replicated (so a resumed state, restored with these shardings, is on the mesh)."""
  if mesh.size == 1:
    return state, frozen
  replicated = NamedSharding(mesh, PartitionSpec())
  step, opt_state = jax.tree.map(lambda x: jax.device_put(np.asarray(x), replicated), (state.step, state.opt_state))
  place = params_placer(model, mesh)  # one abstract init for both partitions
  return train_step.TrainState(step, place(state.trainable), opt_state), place(frozen)


def place_params(model: nn.Module, mesh, params: dict) -> dict:
  """A (partial) plain parameter tree of `model` -> global arrays on `mesh` (`params_placer`)."""
  return params_placer(model, mesh)(params)


def params_placer(model: nn.Module, mesh) -> Callable[[dict], dict]:
  """-> a function placing (partial) plain parameter trees of `model` on `mesh` by the logical axis rules.

  Every process passes the same values (a seeded init or a checkpoint read on every process); they go through
  host memory, since a process cannot send its device's array to another process's devices."""
  args, kwargs = model_inputs.example_inputs(model)
  abstract = jax.eval_shape(model.init, jax.random.key(0), *args, **kwargs)["params"]
  shardings = flatten_params(partitioning.logical_to_mesh_sharding(abstract, mesh))
  return lambda params: unflatten_params(
      {k: jax.device_put(np.asarray(v), shardings[k]) for k, v in flatten_params(params).items()})
