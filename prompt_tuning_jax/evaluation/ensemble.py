"""Prompt ensembles (Lester et al. 2021, §7): K trained prompts, one bank, one forward, votes and mean log-probs.

  bank = stack_prompt_params([params_0, ..., params_{K-1}])   # one tree, prompt bank [K, P, d]
  scores = ensemble_scores(model_k, bank, batch, K, label_tokens)   # [K, b, C]
  majority_vote(scores), mean_log_prob(scores)                 # [b] class ids each

`model_k` is the same model configured with `prompts.prompt_factory.num_prompts = K` (flax checks the bank's
shape against the module's); `stack_runs` gives both from K trained runs. The batch is tiled K times, copy k
with `prompt_index = k`, and scored in one jitted forward [K*b]; `evaluate_ensemble` turns the scores of a
dataset into per-prompt and ensemble metrics.
"""
import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning_jax.evaluation import rank_classification
from prompt_tuning_jax.models import inputs
from prompt_tuning_jax.peft import prompt_params

Array = jax.Array
MetricFn = Callable[[Sequence[Any], Sequence[Any]], dict[str, float]]


def stack_prompt_params(param_trees: Sequence[Mapping]) -> dict:
  """K param trees of one single-prompt model -> one tree whose prompt bank is [K, P, d] (k = tree k's).

  NOTE: every other leaf (the frozen backbone, a classifier head) is taken from the first tree; the K runs
  must share them, as prompt tuning's do.
  """
  if not param_trees:
    raise ValueError("stack_prompt_params needs at least one param tree, got none")
  flats = [flatten_params(tree) for tree in param_trees]
  banks = [path for path in flats[0] if prompt_params.is_prompt_bank(path)]
  if len(banks) != 1:
    raise ValueError(f"stack_prompt_params expects exactly one 'prompt/prompt' bank per tree, found {banks}")
  return unflatten_params({**flats[0], banks[0]: prompt_params.stack_prompts([flat[banks[0]] for flat in flats])})


def bank_model(model: nn.Module, num_prompts: int) -> nn.Module:
  """`model` with a prompt bank of `num_prompts` (its bound prompt factory, num_prompts overridden)."""
  factory = getattr(getattr(model, "slots", None), "input_transform", None)
  if factory is None:
    raise ValueError(f"an ensemble of {num_prompts} checkpoints needs a prompt method (slots.input_transform), "
                     f"but {type(model).__name__} has none bound")
  slots = dataclasses.replace(model.slots, input_transform=functools.partial(factory, num_prompts=num_prompts))
  return model.clone(slots=slots)


def check_only_prompts_differ(names: Sequence[str], param_trees: Sequence[Mapping]) -> None:
  """A one-pass ensemble shares everything but the prompt bank; runs that trained more (e.g. a BERT head)
  with different results cannot be stacked (one error naming the leaf and both runs)."""
  first = flatten_params(param_trees[0])
  for name, tree in zip(names[1:], param_trees[1:]):
    for path, value in flatten_params(tree).items():
      if not prompt_params.is_prompt_bank(path) and not np.array_equal(np.asarray(value), np.asarray(first[path])):
        raise ValueError(f"ensemble: {path} differs between {names[0]} and {name}; a prompt ensemble shares "
                         f"every other parameter (train the prompts with the rest frozen, e.g. "
                         f"trainable.trainable_mask.patterns = ['(^|/)prompt(/|$)'])")


def stack_runs(model: nn.Module, param_trees: Sequence[Mapping], names: Sequence[str]) -> tuple[nn.Module, dict]:
  """K trained runs of one single-prompt `model` -> (`model` with a bank of K prompts, the params with the runs'
  prompts stacked [K, P, d]); `names` (e.g. their MODEL_DIRs) name the runs in errors.

  Only the prompts may differ between the runs (`check_only_prompts_differ`).
  """
  check_only_prompts_differ(names, param_trees)
  return bank_model(model, len(param_trees)), stack_prompt_params(param_trees)


def tile_for_prompts(batch: Mapping[str, Array], num_prompts: int) -> tuple[dict[str, Array], Array]:
  """A batch [b, ...] -> (its K copies [K*b, ...], prompt_index [K*b]); rows k*b ... k*b+b-1 use prompt k."""
  tiled = {k: jnp.tile(v, (num_prompts,) + (1,) * (v.ndim - 1)) for k, v in batch.items()}  # [b, ..] -> [K*b, ..]
  b = next(iter(batch.values())).shape[0]
  return tiled, jnp.repeat(jnp.arange(num_prompts, dtype=jnp.int32), b)


@functools.partial(jax.jit, static_argnames=("model", "num_prompts", "length_normalize"))
def ensemble_scores(model: nn.Module, bank_params: dict, batch: Mapping[str, Array], num_prompts: int,
                    label_tokens: Optional[Array] = None, length_normalize: bool = False) -> Array:
  """Per-prompt class scores [K, b, C] of one batch, all K prompts in one forward of [K*b] rows.

  Args:
    model: T5 (rank classification against `label_tokens` [C, t]) or a BERT sequence classifier (its
      log-softmax), configured with a bank of `num_prompts` = K prompts.
    bank_params: its parameters with the bank (`stack_prompt_params`).
    batch: model inputs (models/inputs.py `model_inputs`): encoder_input_tokens [b, l], or input_ids /
      attention_mask / token_type_ids [b, l]; other keys are ignored.
  """
  tiled, prompt_index = tile_for_prompts(inputs.model_inputs(batch), num_prompts)
  scores = rank_classification.score_batch(model, bank_params, tiled, label_tokens, prompt_index, length_normalize)
  return scores.reshape(num_prompts, -1, scores.shape[-1])  # [K*b, C] -> [K, b, C]


def majority_vote(scores: Array) -> np.ndarray:
  """Scores [K, b, C] -> class ids [b]: the class most prompts rank first.

  Ties between classes with equally many votes go to the one with the larger log-prob summed over the K
  prompts, and a tie there too to the lowest class id.
  """
  scores = np.asarray(scores)
  votes = np.eye(scores.shape[-1], dtype=np.int64)[scores.argmax(-1)].sum(0)  # [K, b] -> [K, b, C] -> [b, C]
  summed = scores.sum(0)  # [b, C]
  return np.where(votes == votes.max(-1, keepdims=True), summed, -np.inf).argmax(-1)


def mean_log_prob(scores: Array) -> np.ndarray:
  """Scores [K, b, C] -> class ids [b]: argmax of the log-probs averaged over the K prompts (ties: lowest id)."""
  return np.asarray(scores).mean(0).argmax(-1)


COMBINERS = {"majority_vote": majority_vote, "mean_log_prob": mean_log_prob}  # name -> scores [K, b, C] -> [b]


def compute_metrics(metric_fns: Sequence[MetricFn], targets: Sequence[Any], predictions: Sequence[Any]
                    ) -> dict[str, float]:
  """Every metric function's values in one dict of floats."""
  return {name: float(value) for fn in metric_fns for name, value in fn(targets, predictions).items()}


def evaluate_ensemble(scores: Array, targets: Sequence[Any], metric_fns: Sequence[MetricFn],
                      to_predictions: Callable[[np.ndarray], Sequence[Any]]) -> dict[str, float]:
  """Per-prompt and ensemble metrics of a dataset's scores.

  Args:
    scores: [K, n, C] class scores (`ensemble_scores` over every batch).
    targets: n postprocessed targets, as the metric functions take them.
    metric_fns: `(targets, predictions) -> {name: value}` (tasks.registry.task_metrics); higher is better.
    to_predictions: class ids [n] -> n postprocessed predictions.

  Returns:
    flat {'prompt_<k>/<metric>', 'mean/<metric>' (over the K prompts), 'best/<metric>' (max over the K),
    'majority_vote/<metric>', 'mean_log_prob/<metric>'}.
  """
  scores = np.asarray(scores)
  if scores.ndim != 3 or scores.shape[1] != len(targets):
    raise ValueError(f"evaluate_ensemble needs scores [K, n, C] with n = {len(targets)} targets, got {scores.shape}")
  single = [compute_metrics(metric_fns, targets, to_predictions(s.argmax(-1))) for s in scores]
  report = {f"prompt_{k}/{name}": value for k, metrics in enumerate(single) for name, value in metrics.items()}
  for name in single[0]:
    values = [metrics[name] for metrics in single]
    report[f"mean/{name}"], report[f"best/{name}"] = float(np.mean(values)), float(np.max(values))
  for combiner, combine in COMBINERS.items():
    metrics = compute_metrics(metric_fns, targets, to_predictions(combine(scores)))
    report.update({f"{combiner}/{name}": value for name, value in metrics.items()})
  return report
