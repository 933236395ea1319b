"""Every shipped method gin file, on tiny T5 and tiny BERT: parses, initialises and trains three steps.

Parametrised over the gin/methods/*.gin files present when the tests run, so a new method is covered
as soon as its gin file lands. After three steps (plain Adam, no weight decay, so only a gradient
moves a leaf) every frozen leaf is bit-identical and every trainable leaf has moved: a method whose
parameter gets no gradient fails here. Three steps suffice for zero-initialised up-projections (LoRA B,
adapter W_up): their partners only receive a gradient from the second step on.
Dropout is off (rng None): its random bits triple XLA's compile time on CPU; a method's own tests cover
its dropout, tests/train/test_train_step.py the step's dropout rng.
"""
import glob
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.models import inputs
from prompt_tuning_jax.peft import prompt_params, trainable
from prompt_tuning_jax.train import optimizers, train_step

# NOTE: XLA's CPU backend optimisations take longer than these tiny steps run; the checks do not need them.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
METHOD_FILES = sorted(glob.glob(os.path.join(gin_utils.gin_dir(), "methods", "*.gin")))
BACKBONES = {
    "t5": ("models/t5_1_1_small.gin", [
        "t5_config.preset.vocab_size = 128", "t5_config.preset.embed_dim = 32", "t5_config.preset.num_heads = 4",
        "t5_config.preset.head_dim = 8", "t5_config.preset.mlp_dim = 64", "t5_config.preset.num_encoder_layers = 2",
        "t5_config.preset.num_decoder_layers = 1"]),
    "bert": ("models/bert_base.gin", [
        "bert_config.preset.vocab_size = 128", "bert_config.preset.embed_dim = 32", "bert_config.preset.num_heads = 4",
        "bert_config.preset.head_dim = 8", "bert_config.preset.mlp_dim = 64", "bert_config.preset.num_layers = 2",
        "NUM_LABELS = 3"]),
}


def build(model_file, method_file, bindings):
  """Parses the gin files; returns (model, initialised plain params, the gin-configured mask)."""
  gin_utils.parse_gin([model_file, method_file], bindings)
  model = gin_utils.configured_macro("MODEL")
  args, kwargs = inputs.example_inputs(model)
  params = nn.meta.unbox(model.init(jax.random.key(0), *args, **kwargs)["params"])
  if any(np.isnan(x).any() for x in jax.tree_util.tree_leaves(params)):
    # Table-based prompt inits leave NaN until the frozen table is loaded (peft/prompts.py docstring).
    params = gin_utils.configured(prompt_params.initialize_prompt)(params, rng=jax.random.key(1))
  nan = [p for p, x in flatten_params(params).items() if np.isnan(x).any()]
  assert not nan, f"{method_file}: NaN parameters after init: {nan}"
  return model, params, gin_utils.configured(trainable.trainable_mask)(params)


def test_methods_are_found():
  names = {os.path.basename(f) for f in METHOD_FILES}
  assert {"full_finetuning.gin", "bitfit.gin"} <= names, names


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("method_file", METHOD_FILES, ids=os.path.basename)
def test_method_trains_three_steps(method_file, backbone):
  model_file, bindings = BACKBONES[backbone]
  model, params, mask = build(model_file, method_file, bindings)
  before = jax.tree_util.tree_map(np.array, params)
  optimizer = optimizers.build_optimizer(optimizers.adamw(1e-2, weight_decay=0.0))
  state, frozen = train_step.init_train_state(params, mask, optimizer)
  step = jax.jit(train_step.train_step_fn(train_step.loss_fn_for(model), optimizer), donate_argnums=0,
                 compiler_options=FAST_COMPILE)
  batch = inputs.example_batch(model)
  for _ in range(3):
    state, metrics = step(state, frozen, batch, None)
    assert np.isfinite(float(metrics["loss"])), metrics
  after = flatten_params(trainable.merge(state.trainable, frozen))
  flat_mask = flatten_params(mask)
  stuck, changed = [], []
  for path, old in flatten_params(before).items():
    same = np.array_equal(np.asarray(after[path]), old)
    if flat_mask[path] and same:
      stuck.append(path)
    elif not flat_mask[path] and not same:
      changed.append(path)
  assert not changed, f"frozen leaves changed: {changed}"
  assert not stuck, f"trainable leaves never moved (no gradient reaches them?): {stuck}"
  assert int(state.step) == 3


def test_unknown_slot_binding_is_named():
  model_file, bindings = BACKBONES["t5"]
  with pytest.raises(ValueError, match=r"'slots.Slots' doesn't have a parameter named 'lora_delta'"):
    gin_utils.parse_gin([model_file], bindings + ["slots.Slots.lora_delta = None"])


def test_unknown_slot_in_a_method_file_names_file_and_line(tmp_path):
  path = tmp_path / "typo.gin"
  path.write_text("from __gin__ import dynamic_registration\nfrom prompt_tuning_jax.models import slots\n"
                  "slots.Slots.input_transfrom = None\n")
  with pytest.raises(ValueError, match=r"(?s)input_transfrom.*typo.gin\", line 3"):
    gin_utils.parse_gin([BACKBONES["t5"][0], str(path)])


def test_unknown_method_file_suggests_close_names():
  with pytest.raises(FileNotFoundError, match=r"methods/bitfitt.gin' not found.*close matches.*methods/bitfit.gin"):
    gin_utils.parse_gin([BACKBONES["t5"][0], "methods/bitfitt.gin"])


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_two_methods_on_different_slots_train_together(backbone):
  model_file, bindings = BACKBONES[backbone]
  gin_utils.parse_gin([model_file, "methods/prompt_tuning.gin", "methods/lora.gin"], bindings)
  model = gin_utils.configured_macro("MODEL")
  args, kwargs = inputs.example_inputs(model)
  params = nn.meta.unbox(model.init(jax.random.key(0), *args, **kwargs)["params"])
  params = gin_utils.configured(prompt_params.initialize_prompt)(params, rng=jax.random.key(1))
  by_module = trainable.trainable_by_module(params, gin_utils.configured(trainable.trainable_mask)(params))
  assert {"prompt", "lora_query", "lora_value"} <= set(by_module), by_module


@pytest.mark.parametrize("files,slot", [
    (("methods/sequential_adapter.gin", "methods/scaled_parallel_adapter.gin"), "post_mlp_adapter"),
    (("methods/gpc.gin", "methods/pasta.gin"), "layer_input_hook"),
    (("methods/prompt_tuning.gin", "methods/gpc.gin"), "input_transform")])
def test_two_methods_on_one_slot_are_refused_naming_both_files(files, slot):
  model_file, bindings = BACKBONES["t5"]
  with pytest.raises(ValueError) as error:
    gin_utils.parse_gin([model_file, *files], bindings)
  message = str(error.value)
  assert f"slots.Slots.{slot}" in message and "\n" not in message
  assert all(os.path.basename(f) in message for f in files), message


def test_mam_and_results_files_bind_their_slots_once():
  # MAM includes prefix tuning and the scaled parallel adapter (different slots); results files include methods.
  assert gin_utils.bound_slots(gin_utils.resolve_gin_file("methods/mam.gin")) == {
      "attention_kv_prefix", "post_mlp_adapter"}
  assert gin_utils.bound_slots(gin_utils.resolve_gin_file("results/gpc.gin")) == {"input_transform", "layer_input_hook"}
