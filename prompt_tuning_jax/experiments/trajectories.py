"""Training trajectories, ours against HF PEFT or plain PyTorch: same weights, batches, AdamW and schedule.

  python scripts/trajectories.py --out trajectories.json [--steps 10 --batch 8 --length 64]

Trains the real MiniLM-L6 (prompt_tuning_jax.minilm.minilm_dir()) on the first `--steps` SST-2 training batches
(data dir as the tasks package resolves it: $PROMPT_TUNING_DATA_DIR, else ../shared/data) with LoRA, BitFit,
full fine-tuning and prefix tuning, once with our train step and once with transformers (+ peft), and prints
and writes per method: steps, max relative loss difference, max relative parameter difference (and the same
for the parameter updates). tests/peft/test_trajectories.py imports this module for tiny models.

How a comparison runs (`compare_trajectories`):
  ours    the model's and the method's gin files (`Method`: slots, trainable mask patterns and OPTIMIZER, whose
          learning rate gets gin/results' linear_decay schedule; wrapped by optimizers.build_optimizer as
          optimizers.gin_optimizer does, with clipping where the method clips), and train_step.train_step_fn jitted
          with the state donated (make_train_step) on `loss_fn_for(model, z_loss=0.0)`, dropout off (rng None);
  theirs  a `TorchSide`: transformers' model (eval mode: no dropout, gradients still computed) holding our
          weights through the exporters (checkpoints/hf_bert.py, hf_t5.py, peft_export.py), wrapped by peft
          where peft has the method; `torch.optim.AdamW` with the settings of `AdamW` below, the decay mask as
          torch param groups (`no_decay_names`, HF Trainer's rule), transformers'
          get_linear_schedule_with_warmup, and clip_grad_norm_ when the method clips.
Both evaluate the schedule at the pre-update step (optax's count, LambdaLR before .step()).

Metrics: loss  max over steps of |ours - theirs| / |theirs|;
         param max over trained tensors of max|ours - theirs| / max(max|theirs|, lr) (final parameters);
         update the same on (final - initial), which the initial values do not dominate.
The floor lr (the peak learning rate, about one Adam step) keeps a tensor that barely moves from dividing
rounding by rounding; tensors whose exact gradient is zero (NULL_GRADIENT) are left out.
NOTE: torch's clip_grad_norm_ divides by (norm + 1e-6), optax's clip_by_global_norm by the norm: a relative
difference of 1e-6 / norm in clipped steps.
"""
import argparse
import dataclasses
import functools
import json
import os
import re
import tempfile
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
import peft
import torch
import transformers
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_torch_file

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.checkpoints import hf_bert, hf_t5, peft_export
from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning_jax.experiments import examples
from prompt_tuning_jax.models import inputs
from prompt_tuning_jax.models.t5 import T5
from prompt_tuning_jax.peft import trainable
from prompt_tuning_jax.train import optimizers, train_step

Batch = dict[str, np.ndarray]
NULL_GRADIENT = re.compile(r"attention\.self\.key\.bias$")
"""torch names of tensors whose exact gradient is zero: BERT's key bias adds q·b_k to every logit of a query's
row, which the softmax ignores (without prefix columns). Both sides' gradients there are float noise (~1e-10)
that Adam turns into updates of either sign, so they are left out of the metrics (`null_gradient_moved`
reports how far they drifted, in peak learning rates)."""


@dataclasses.dataclass(frozen=True)
class AdamW:
  """The torch side's optimizer, stated independently of our gin files: AdamW + linear schedule (+ clip).

  Attributes:
    learning_rate: the peak. betas / eps / weight_decay: torch.optim.AdamW's (decay on the decayed group).
    total_steps / warmup_steps: get_linear_schedule_with_warmup's. max_grad_norm: clip_grad_norm_'s, or None.
    group_learning_rates: (torch parameter-name regex, peak): parameters whose name matches one (the first)
      form a param group of that peak, under the same schedule; the rest train at `learning_rate`.
  """
  learning_rate: float
  betas: tuple[float, float]
  eps: float
  weight_decay: float
  total_steps: int
  warmup_steps: int = 0
  max_grad_norm: Optional[float] = None
  group_learning_rates: tuple[tuple[str, float], ...] = ()

  def peak(self, name: str) -> float:
    """The peak learning rate of the torch parameter `name`."""
    return next((peak for pattern, peak in self.group_learning_rates if re.search(pattern, name)),
                self.learning_rate)


TORCH_SETTINGS = {
    "unified_optimizer": ((0.9, 0.98), 1e-6, 0.1),  # He et al.'s GLUE script (adapters, LoRA, prefix, MAM)
    "adamw": ((0.9, 0.999), 1e-6, 0.01),  # BERT fine-tuning, HF Trainer's decay
    "bitfit_optimizer": ((0.9, 0.999), 1e-6, 0.01),  # AdamW; biases carry no decay anyway
    "fl_tuning_optimizer": ((0.9, 0.999), 1e-6, 0.01),  # bert4keras Adam + decoupled decay
    "pasta_optimizer": ((0.9, 0.999), 1e-6, 0.0),  # transformers.AdamW, no decay
    "gpc_optimizer": ((0.9, 0.999), 1e-6, 0.0),  # GPC (METHODS §C(5)): AdamW, no decay, two learning rates
}
"""Our optax function (train/optimizers.py) -> torch.optim.AdamW's (betas, eps, weight_decay), written out
from each method's paper or code as that module's docstring lists them: the torch side never reads ours."""


@dataclasses.dataclass(frozen=True)
class Method:
  """A method as a run trains it: its gin/methods file and the optimizer its OPTIMIZER macro binds.

  Attributes:
    gin_file: 'methods/<name>.gin'. optimizer: the TORCH_SETTINGS key of the function OPTIMIZER calls.
    learning_rate: the peak. warmup_fraction: of the steps, rounded (optimizers.linear_decay's rule).
    max_grad_norm: global-norm clipping (results/unified_optimizer.gin: 1.0), or None.
    bindings: extra gin bindings (after the optimizer's; may override OPTIMIZER).
    learning_rate_argument: the optimizer function's argument that gets `learning_rate`'s schedule.
    group_learning_rates: (another argument, torch parameter-name regex, peak): optimizers with one learning
      rate per parameter group (optimizers.gpc_optimizer); each argument gets its own schedule (a gin scope
      named after it), and the torch parameters matching the regex a param group (`AdamW`).
  """
  gin_file: str
  optimizer: str
  learning_rate: float
  warmup_fraction: float = 0.0
  max_grad_norm: Optional[float] = None
  bindings: tuple[str, ...] = ()
  learning_rate_argument: str = "learning_rate"
  group_learning_rates: tuple[tuple[str, str, float], ...] = ()

  def adamw(self, steps: int) -> AdamW:
    betas, eps, weight_decay = TORCH_SETTINGS[self.optimizer]
    return AdamW(self.learning_rate, betas, eps, weight_decay, steps, int(round(self.warmup_fraction * steps)),
                 self.max_grad_norm, tuple((pattern, peak) for _, pattern, peak in self.group_learning_rates))


# ------------------------------------------------------------------------------------------- our side


@dataclasses.dataclass
class Ours:
  """A gin-built model: params (plain), the method's trainable mask and the run's optimizer."""
  model: nn.Module
  params: dict
  mask: dict
  optimizer: Any


def optimizer_bindings(function: str, adamw: AdamW, argument: str = "learning_rate",
                       groups: Sequence[tuple[str, float]] = ()) -> list[str]:
  """gin bindings giving the method's optax function (its gin file's OPTIMIZER, e.g. 'unified_optimizer')
  `adamw`'s schedule, `linear_decay(peak, total_steps, warmup_steps)`, as gin/results files do.

  argument: the function's learning-rate argument. groups: (another argument, its peak), each a
  `linear_decay` in a gin scope named after the argument (same steps).
  """
  bindings = ["from __gin__ import dynamic_registration", "from prompt_tuning_jax.train import optimizers",
              f"optimizers.{function}.{argument} = @optimizers.linear_decay()",
              f"optimizers.linear_decay.peak_value = {adamw.learning_rate}",
              f"optimizers.linear_decay.total_steps = {adamw.total_steps}",
              f"optimizers.linear_decay.warmup_steps = {adamw.warmup_steps}"]
  for group, peak in groups:
    bindings += [f"optimizers.{function}.{group} = @{group}/optimizers.linear_decay()",
                 f"{group}/optimizers.linear_decay.peak_value = {peak}"]
  return bindings


def _init(model: nn.Module, paths: Optional[set[str]], compiler_options: Optional[dict]) -> dict:
  """model.init's params (key 0) at `paths` (all when None), as numpy, flat. XLA prunes the rest of the init."""
  args, kwargs = inputs.example_inputs(model)

  def init(key: jax.Array) -> dict:
    flat = flatten_params(nn.meta.unbox(model.init(key, *args, **kwargs)["params"]))
    return {p: v for p, v in flat.items() if paths is None or p in paths}
  return jax.tree_util.tree_map(np.asarray, jax.jit(init, compiler_options=compiler_options)(jax.random.key(0)))


@functools.lru_cache(maxsize=None)
def backbone_params(model_class: type, config: Any, compiler_options: tuple = ()) -> dict:
  """The init of `model_class(config)` with no slots: one compile per backbone, shared by every method on it.

  compiler_options: XLA's, as sorted (name, value) pairs (hashable).
  """
  return unflatten_params(_init(model_class(config), None, dict(compiler_options) or None))


def _initial_params(model: nn.Module, base: dict, compiler_options: Optional[dict]) -> dict:
  """The backbone's weights from `base`, the method's own leaves (the rest) from the model's init."""
  args, kwargs = inputs.example_inputs(model)
  abstract = flatten_params(jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.key(0), *args, **kwargs)[
      "params"])))
  flat = {path: np.asarray(value) for path, value in flatten_params(base).items()}
  for path, value in flat.items():
    if path not in abstract or abstract[path].shape != value.shape:
      raise ValueError(f"base weight {path} {value.shape} is not in the model's params "
                       f"({abstract[path].shape if path in abstract else 'absent'})")
  method = set(abstract) - set(flat)
  if method:
    flat.update(_init(model, method, compiler_options))
  return unflatten_params(flat)


def build_ours(model_files: Sequence[str], model_bindings: Sequence[str], method: Method, steps: int,
               base: Optional[dict] = None, compiler_options: Optional[dict] = None) -> tuple[Ours, AdamW]:
  """Parses the model's gin files, then the method's; -> (ours, the torch side's AdamW for `steps` steps).

  The gin config stays parsed (the slots read it when the model runs). Our optimizer is the gin OPTIMIZER with
  the schedule bound (`optimizer_bindings`), wrapped as optimizers.gin_optimizer does (+ method.max_grad_norm).
  base: the backbone's weights (e.g. MiniLM + a head), by path; None = `backbone_params`' init.
  compiler_options: XLA's, for the inits (tests pass fast-compile options).
  """
  adamw = method.adamw(steps)
  groups = [(argument, peak) for argument, _, peak in method.group_learning_rates]
  gin_utils.parse_gin([*model_files, method.gin_file],
                      [*model_bindings, *optimizer_bindings(method.optimizer, adamw, method.learning_rate_argument,
                                                            groups), *method.bindings])
  model = gin_utils.configured_macro("MODEL")
  if base is None:
    base = backbone_params(type(model), model.config, tuple(sorted((compiler_options or {}).items())))
  params = _initial_params(model, base, compiler_options)
  mask = gin_utils.configured(trainable.trainable_mask)(params)
  reference = gin.query_parameter("%OPTIMIZER")
  if reference.selector.split(".")[-1] != method.optimizer:
    raise ValueError(f"{method.gin_file}: OPTIMIZER calls {reference.selector}, but the method names "
                     f"{method.optimizer!r} (whose torch settings the reference uses)")
  optimizer = optimizers.build_optimizer(gin_utils.configured_macro("OPTIMIZER"), method.max_grad_norm)
  return Ours(model, params, mask, optimizer), adamw


def train_ours(ours: Ours, batches: Sequence[Batch], compiler_options: Optional[dict] = None
               ) -> tuple[list[float], list[float], dict]:
  """The project's train step (make_train_step's: train_step_fn jitted, state donated), dropout off
  -> (losses, gradient norms, final params)."""
  state, frozen = train_step.init_train_state(ours.params, ours.mask, ours.optimizer)
  step = jax.jit(train_step.train_step_fn(train_step.loss_fn_for(ours.model, z_loss=0.0), ours.optimizer),
                 donate_argnums=(0,), compiler_options=compiler_options)
  losses, grad_norms = [], []
  for batch in batches:
    state, metrics = step(state, frozen, batch, None)
    losses.append(float(metrics["loss"]))
    grad_norms.append(float(metrics["grad_norm"]))
  final = trainable.merge(state.trainable, frozen)
  return losses, grad_norms, jax.tree_util.tree_map(np.asarray, final)


def decayed_count(ours: Ours) -> int:
  """Trainable scalars that our optimizer decays (optimizers.NO_DECAY_PATTERNS)."""
  trained, _ = trainable.split(ours.params, ours.mask)
  return trainable.count(trained, optimizers.decay_mask()(trained))


def base_only(params: dict, names: dict) -> dict:
  """The leaves a name map (hf_bert / hf_t5 `name_map`) knows: the frozen backbone without method leaves."""
  return unflatten_params({p: v for p, v in flatten_params(params).items() if p in names})


# ----------------------------------------------------------------------------------------- torch side


@dataclasses.dataclass
class TorchSide:
  """The reference: `model` (its requires_grad parameters train), `loss(batch)`, and the trained parameters
  both ways under one naming: `theirs()` from the torch model, `ours(params)` from ours. `base_loss(batch)`,
  where there is one, is the loss with the method switched off (compare_trajectories' `method_effect`)."""
  model: torch.nn.Module
  loss: Callable[[Batch], torch.Tensor]
  theirs: Callable[[], dict[str, np.ndarray]]
  ours: Callable[[dict], dict[str, np.ndarray]]
  base_loss: Optional[Callable[[Batch], torch.Tensor]] = None


def _long(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.asarray(x, np.int64))


def bert_loss(model: torch.nn.Module, position_offset: int = 0) -> Callable[[Batch], torch.Tensor]:
  """HF's sequence-classification loss (cross-entropy, mean over the batch) on our batch format.

  position_offset: passed as position_ids = arange(l) - offset (peft adds num_virtual_tokens back).
  """
  def loss(batch: Batch) -> torch.Tensor:
    ids = _long(batch["input_ids"])
    extra = {}
    if position_offset:
      extra["position_ids"] = torch.arange(ids.shape[1])[None] - position_offset
    return model(input_ids=ids, attention_mask=_long(batch["attention_mask"]),
                 token_type_ids=_long(batch["token_type_ids"]), labels=_long(batch["labels"]), **extra).loss
  return loss


def t5_loss(model: torch.nn.Module) -> Callable[[Batch], torch.Tensor]:
  """Mean token cross-entropy over the weighted targets (text_to_text_loss with z_loss=0)."""
  def loss(batch: Batch) -> torch.Tensor:
    tokens = _long(batch["encoder_input_tokens"])
    logits = model(input_ids=tokens, attention_mask=tokens > 0,
                   decoder_input_ids=_long(batch["decoder_input_tokens"])).logits
    labels = np.where(batch["decoder_loss_weights"] > 0, batch["decoder_target_tokens"], -100)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), _long(labels).reshape(-1),
                                             ignore_index=-100)
  return loss


def hf_bert_classifier(params: dict, config: Any) -> torch.nn.Module:
  """transformers' BertForSequenceClassification (eager attention) holding our backbone and head."""
  hf_config = transformers.BertConfig(**hf_bert.hf_config_from_bert(config), attn_implementation="eager")
  model = transformers.BertForSequenceClassification(hf_config)
  names = hf_bert.name_map(config, "sequence_classification", "bert.")
  state = {k: torch.from_numpy(np.array(v)) for k, v in hf_bert.hf_tensors(base_only(params, names), config).items()}
  missing, unexpected = model.load_state_dict(state, strict=False)
  if missing or unexpected:
    raise ValueError(f"transformers BERT vs our export: missing {missing}, unexpected {unexpected}")
  return model


def hf_t5_model(params: dict, config: Any) -> torch.nn.Module:
  """hf_t5.to_transformers of the base weights (one shared input table, as ours)."""
  return hf_t5.to_transformers(base_only(params, hf_t5.name_map(config)), config)


def trainable_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
  return {n: p.detach().numpy().copy() for n, p in model.named_parameters() if p.requires_grad}


def plain_side(ours: Ours, trains: Callable[[str], bool]) -> TorchSide:
  """Unwrapped transformers model (full fine-tuning, BitFit): `trains(name)` sets requires_grad."""
  config, is_t5 = ours.model.config, isinstance(ours.model, T5)
  model = hf_t5_model(ours.params, config) if is_t5 else hf_bert_classifier(ours.params, config)
  for name, parameter in model.named_parameters():
    parameter.requires_grad_(bool(trains(name)))

  names = hf_t5.name_map(config) if is_t5 else hf_bert.name_map(config, "sequence_classification", "bert.")
  trained = {names[path][0] for path, trains_leaf in flatten_params(ours.mask).items() if trains_leaf}

  def ours_named(params: dict) -> dict[str, np.ndarray]:
    """Our trained leaves (by our mask) in HF names."""
    tensors = hf_t5.hf_tensors(params, config) if is_t5 else hf_bert.hf_tensors(params, config)
    return {n: v for n, v in tensors.items() if n in trained}

  return TorchSide(model, t5_loss(model) if is_t5 else bert_loss(model), lambda: trainable_state(model),
                   ours_named)


BITFIT_TORCH = re.compile(r"\.bias$|^classifier\.")
"""BitFit in torch names (gin/methods/bitfit.gin on BERT): every bias, and the classifier head."""


def peft_adapter_side(ours: Ours, directory: str) -> TorchSide:
  """LoRA or T5 prompt tuning: our export_hf_peft adapter, loaded trainable by peft.PeftModel onto the
  transformers export of our frozen weights. Compared in peft's saved naming (get_peft_model_state_dict)."""
  config, is_t5 = ours.model.config, isinstance(ours.model, T5)
  base = hf_t5_model(ours.params, config) if is_t5 else hf_bert_classifier(ours.params, config)
  initial = os.path.join(directory, "initial")
  peft_export.export_hf_peft(ours.params, ours.model, initial)
  # NOTE: PeftModel.from_pretrained refuses is_trainable=True for prompt learning; this path serves both.
  setup = peft.PeftConfig.from_pretrained(initial)
  setup.inference_mode = False
  model = peft.get_peft_model(base, setup)
  # compare_trajectories checks that the load took (the sides' starting tensors agree).
  peft.set_peft_model_state_dict(model, load_torch_file(os.path.join(initial, peft_export.ADAPTER_WEIGHTS)))

  def ours_named(params: dict) -> dict[str, np.ndarray]:
    path = os.path.join(directory, "final")
    peft_export.export_hf_peft(params, ours.model, path)
    return load_file(os.path.join(path, peft_export.ADAPTER_WEIGHTS))

  theirs = lambda: {k: v.detach().numpy().copy() for k, v in peft.get_peft_model_state_dict(model).items()}
  loss = t5_loss(model) if is_t5 else bert_loss(model)
  return TorchSide(model, loss, theirs, ours_named, _disabled(model, loss))


def _disabled(model: Any, loss: Callable[[Batch], torch.Tensor]) -> Callable[[Batch], torch.Tensor]:
  """`loss` under peft's disable_adapter (the base model, its original head)."""
  def base_loss(batch: Batch) -> torch.Tensor:
    with model.disable_adapter():
      return loss(batch)
  return base_loss


def _prefixes(params: dict, num_layers: int) -> dict[str, np.ndarray]:
  """Our BERT prefixes -> peft's PrefixEncoder tensors (torch names relative to prompt_encoder.default).

  Direct (`Prefix`): embedding.weight [p, L*2*d] = per layer i the blocks [key_i, value_i] (peft views the
  columns as [2L, n, h] and takes rows 2i, 2i + 1 of layer i). MLP (`PrefixMLP`, one layer only): embedding
  [p, d], transform.0 = hidden (Linear [out, in]), transform.2 = output, whose halves are key and value.
  """
  layers = [params["bert"]["encoder"][f"layers_{i}"]["attention"]["prefix"] for i in range(num_layers)]
  if "key" in layers[0]:
    return {"embedding.weight": np.concatenate([np.concatenate([l["key"], l["value"]], axis=1) for l in layers], 1)}
  if num_layers != 1:
    raise ValueError(f"the prefix MLP of {num_layers} layers has no peft form: peft's one network emits every "
                     "layer's prefixes; ours has one network per layer (equal only for one layer)")
  mlp, = layers
  return {"embedding.weight": mlp["embedding"], "transform.0.weight": mlp["hidden"]["kernel"].T,
          "transform.0.bias": mlp["hidden"]["bias"], "transform.2.weight": mlp["output"]["kernel"].T,
          "transform.2.bias": mlp["output"]["bias"]}


def peft_prefix_side(ours: Ours, length: int, hidden_dim: Optional[int]) -> TorchSide:
  """BERT prefix tuning: peft's PrefixTuningConfig (prefix_projection iff hidden_dim) with our prefixes and head.

  NOTE: peft gives the tokens positions p..p+l-1 (its position_ids offset, and BertEmbeddings' default start
  at the cache length); ours keeps 0..l-1, prefixes being keys and values only. The loss passes
  position_ids = arange(l) - p, which peft shifts back to arange(l).
  """
  config = ours.model.config
  base = hf_bert_classifier(ours.params, config)
  setup = peft.PrefixTuningConfig(task_type=peft.TaskType.SEQ_CLS, num_virtual_tokens=length,
                                  prefix_projection=hidden_dim is not None, encoder_hidden_size=hidden_dim or 1)
  model = peft.get_peft_model(base, setup)
  head = hf_bert.name_map(config, "sequence_classification", "bert.")

  def ours_named(params: dict) -> dict[str, np.ndarray]:
    named = {f"prompt_encoder.default.{k}": v for k, v in _prefixes(params, config.num_layers).items()}
    for leaf, value in params["classifier"].items():
      name = head[f"classifier/{leaf}"][0].split(".")[-1]
      named[f"base_model.classifier.modules_to_save.default.{name}"] = value.T if leaf == "kernel" else value
    return named

  parameters = dict(model.named_parameters())
  with torch.no_grad():
    for name, value in ours_named(ours.params).items():
      parameters[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))
  # base_loss: the wrapped BERT called directly, with the trained head (peft's disable_adapter breaks on
  # prompt learning for SEQ_CLS: it reaches for prepare_inputs_for_generation).
  return TorchSide(model, bert_loss(model, position_offset=length), lambda: trainable_state(model), ours_named,
                   bert_loss(model.get_base_model()))


def no_decay_names(model: torch.nn.Module) -> set[str]:
  """HF Trainer's weight-decay exclusions: the parameters of LayerNorm modules (torch's, T5's) and biases."""
  names = set()
  for module_name, module in model.named_modules():
    for name, _ in module.named_parameters(prefix=module_name, recurse=False):
      if "LayerNorm" in type(module).__name__ or name.endswith("bias"):
        names.add(name)
  return names


def train_torch(side: TorchSide, batches: Sequence[Batch], adamw: AdamW) -> tuple[list[float], int]:
  """AdamW steps on the requires_grad parameters, model in eval mode -> (losses, decayed scalar count).

  Param groups: decayed or not (`no_decay_names`) x peak learning rate (`AdamW.peak`).
  """
  named = [(n, p) for n, p in side.model.named_parameters() if p.requires_grad]
  excluded = no_decay_names(side.model)
  decayed = [p for n, p in named if n not in excluded]
  peaks = [adamw.learning_rate, *sorted({adamw.peak(n) for n, _ in named} - {adamw.learning_rate})]
  groups = [{"params": [p for n, p in named if (n in excluded) == no_decay and adamw.peak(n) == peak],
             "weight_decay": 0.0 if no_decay else adamw.weight_decay, "lr": peak}
            for peak in peaks for no_decay in (False, True)]
  optimizer = torch.optim.AdamW(groups, lr=adamw.learning_rate, betas=adamw.betas, eps=adamw.eps)
  schedule = transformers.get_linear_schedule_with_warmup(optimizer, adamw.warmup_steps, adamw.total_steps)
  side.model.eval()
  losses = []
  for batch in batches:
    loss = side.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if adamw.max_grad_norm is not None:
      torch.nn.utils.clip_grad_norm_([p for _, p in named], adamw.max_grad_norm)
    optimizer.step()
    schedule.step()
    losses.append(float(loss.detach()))
  return losses, sum(p.numel() for p in decayed)


# --------------------------------------------------------------------------------------------- compare


def relative(a: np.ndarray, b: np.ndarray, floor: float) -> float:
  """max|a - b| / max(max|b|, floor)."""
  return float(np.abs(a - b).max(initial=0.0)) / max(float(np.abs(b).max(initial=0.0)), floor)


def _updates(final: dict, initial: dict, reference_final: dict, reference_initial: dict, floor: float,
             names: Sequence[str]) -> dict[str, float]:
  """Per tensor: the relative difference of (final - initial) from the reference's."""
  return {k: relative(final[k] - initial[k], reference_final[k] - reference_initial[k], floor) for k in names}


def compare_trajectories(ours: Ours, side: TorchSide, batches: Sequence[Batch], adamw: AdamW,
                         compiler_options: Optional[dict] = None, exact: Optional[TorchSide] = None
                         ) -> dict[str, Any]:
  """Trains both sides on `batches` -> losses, grad norms and the metrics of the module docstring.

  exact: a second copy of the torch side, run in float64: the float32 noise floor. Adds `*_float64` metrics of
  ours and of the float32 torch side against it (ours no further from exact arithmetic than torch is).
  Raises ValueError when the two sides do not train the same parameters (names, shapes, counts, decay where
  there is any).
  """
  initial_ours, initial_theirs = side.ours(ours.params), side.theirs()
  if initial_ours.keys() != initial_theirs.keys():
    raise ValueError(f"trained tensors differ: ours-only {sorted(initial_ours.keys() - initial_theirs.keys())[:4]}, "
                     f"torch-only {sorted(initial_theirs.keys() - initial_ours.keys())[:4]}")
  start = max(relative(initial_ours[k], initial_theirs[k], 1e-12) for k in initial_theirs)
  counts = (trainable.count(ours.params, ours.mask),
            sum(p.numel() for p in side.model.parameters() if p.requires_grad))
  if start > 1e-6 or counts[0] != counts[1]:
    raise ValueError(f"the sides start apart: relative weight difference {start:.1e}, trainable scalars "
                     f"ours {counts[0]} vs torch {counts[1]}")
  losses_ours, grad_norms, final = train_ours(ours, batches, compiler_options)
  losses_theirs, decayed_theirs = train_torch(side, batches, adamw)
  # NOTE: without decay the masks decide nothing, and may differ: GPC's gate biases (`forget_bias`) miss our
  # `(^|/)bias$` pattern, while HF's rule (`no_decay_names`) excludes every name ending in 'bias'.
  if adamw.weight_decay and decayed_count(ours) != decayed_theirs:
    raise ValueError(f"weight decay masks differ: ours decays {decayed_count(ours)} scalars, torch {decayed_theirs}")
  final_ours, final_theirs = side.ours(final), side.theirs()
  floor = adamw.learning_rate
  compared = [k for k in final_theirs if not NULL_GRADIENT.search(k)]
  param = {k: relative(final_ours[k], final_theirs[k], floor) for k in compared}
  update = _updates(final_ours, initial_ours, final_theirs, initial_theirs, floor, compared)
  # Tensors whose exact gradient is zero move by float noise on each side: only how far, in peak lrs.
  noise = [max(np.abs(final_ours[k] - initial_ours[k]).max(), np.abs(final_theirs[k] - initial_theirs[k]).max())
           for k in final_theirs if NULL_GRADIENT.search(k)]
  effect = None
  if side.base_loss is not None:
    with torch.no_grad():
      trained, base = float(side.loss(batches[0])), float(side.base_loss(batches[0]))
    effect = abs(trained - base) / abs(trained)
  float64 = {}
  if exact is not None:
    exact.model.double()
    losses_exact, _ = train_torch(exact, batches, adamw)
    final_exact = exact.theirs()
    for name, losses, final_side in (("ours", losses_ours, final_ours), ("torch", losses_theirs, final_theirs)):
      float64[f"loss_rel_float64_{name}"] = max(abs(a - b) / abs(b) for a, b in zip(losses, losses_exact))
      float64[f"update_rel_float64_{name}"] = max(_updates(final_side, initial_ours, final_exact, initial_theirs,
                                                           floor, compared).values())
  return {
      **float64,
      "steps": len(batches), "trainable": counts[0], "losses_ours": losses_ours, "losses_theirs": losses_theirs,
      "grad_norms": grad_norms,
      "loss_rel": max(abs(a - b) / abs(b) for a, b in zip(losses_ours, losses_theirs)),
      "param_rel": max(param.values()), "update_rel": max(update.values()),
      "worst_update": max(update, key=update.get), "method_effect": effect,
      "null_gradient_moved": float(max(noise, default=0.0)) / floor,
      "unmoved": sorted(k for k in final_theirs if np.array_equal(final_theirs[k], initial_theirs[k])),
  }


# ------------------------------------------------------------------------------------------ MiniLM, SST-2

MINILM_METHODS = {  # the learning rates and schedules of gin/results/<method>.gin; prefix tuning in peft's form
    "lora": (Method("methods/lora.gin", "unified_optimizer", 1e-4, 0.06, 1.0), peft_adapter_side),
    "bitfit": (Method("methods/bitfit.gin", "bitfit_optimizer", 1e-4),
               lambda ours, d: plain_side(ours, BITFIT_TORCH.search)),
    "full_finetuning": (Method("methods/full_finetuning.gin", "adamw", 2e-5, 0.1,
                               bindings=("OPTIMIZER = @optimizers.adamw()",)),
                        lambda ours, d: plain_side(ours, lambda name: True)),
    "prefix_tuning": (Method("methods/prefix_tuning.gin", "unified_optimizer", 1e-4, 0.06, 1.0,
                             bindings=("from prompt_tuning_jax.peft import prefix",
                                       "prefix.prefix_factory.reparameterize = False")),
                      lambda ours, d: peft_prefix_side(ours, 30, None)),
}
"""name -> (Method, torch side (ours, tmp dir) -> TorchSide). Prefix tuning runs the direct prefixes (peft's
prefix_projection=False): peft's MLP is one network for all 6 layers, ours one per layer."""


def sst2_batches(steps: int, batch_size: int, length: int) -> list[Batch]:
  """The first steps * batch_size SST-2 training examples in file order, as BERT batches [batch, length]."""
  data = examples.first_examples("bert_glue_sst2", "train", length, steps * batch_size)
  if len(data["labels"]) != steps * batch_size:
    raise ValueError(f"SST-2 train gave {len(data['labels']) // batch_size} batches of {batch_size}; "
                     f"--steps={steps} needs {steps}")
  return [{k: np.asarray(v[i * batch_size:(i + 1) * batch_size], np.int32) for k, v in data.items()}
          for i in range(steps)]


def run(args: argparse.Namespace, command: str) -> int:
  """scripts/trajectories.py: MINILM_METHODS (`args.methods`) on the real MiniLM-L6 and the first `args.steps`
  SST-2 batches -> the table printed, and {command, settings (args), versions, rows} as JSON in `args.out`."""
  from prompt_tuning_jax import minilm  # pylint: disable=g-import-not-at-top
  _, base = hf_bert.load_hf_bert(minilm.minilm_dir(), head="sequence_classification", num_labels=2)
  batches = sst2_batches(args.steps, args.batch, args.length)
  rows = []
  for name in args.methods.split(","):
    method, make_side = MINILM_METHODS[name]
    ours, adamw = build_ours(["models/minilm.gin"], [], method, args.steps, base=base)
    with tempfile.TemporaryDirectory() as directory:
      exact = make_side(ours, os.path.join(directory, "float64")) if args.float64_reference else None
      result = compare_trajectories(ours, make_side(ours, directory), batches, adamw, exact=exact)
    rows.append({"method": name, **result})
    print(f"{name}: loss rel {result['loss_rel']:.2e}, param rel {result['param_rel']:.2e}, "
          f"update rel {result['update_rel']:.2e}", flush=True)
  header = ("| method | steps | trainable | max rel loss diff | max rel param diff | max rel update diff | "
            "loss first -> last |")
  lines = [header, "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['method']} | {r['steps']} | {r['trainable']:,} | {r['loss_rel']:.2e} | {r['param_rel']:.2e} | "
                 f"{r['update_rel']:.2e} | {r['losses_theirs'][0]:.4f} -> {r['losses_theirs'][-1]:.4f} |")
  if args.float64_reference:
    lines += ["", "Against a float64 torch run (the float32 noise floor):", "",
              "| method | loss ours | loss torch | update ours | update torch |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['loss_rel_float64_ours']:.2e} | {r['loss_rel_float64_torch']:.2e} | "
              f"{r['update_rel_float64_ours']:.2e} | {r['update_rel_float64_torch']:.2e} |" for r in rows]
  print("\n".join(lines))
  versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
              "jax": jax.__version__}
  with open(args.out, "w") as f:
    json.dump({"command": command, "settings": vars(args), "versions": versions, "rows": rows}, f, indent=2)
  return 0
