"""Every shipped method gin file trains with the optimizer its METHODS.md section documents (optimizers.py).

The optimizer is resolved as a run resolves it (`optimizers.gin_optimizer` after `gin_utils.parse_gin`) and compared
by behaviour: three updates on the same parameters and gradients must equal the documented optimizer's.
"""
import glob
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.train import optimizers

METHODS_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "gin", "methods")
# Each method's optimizer written out in optax from METHODS.md's numbers, not through optimizers.py.
# Lester et al. (§A(5)).
PROMPT_TUNING = lambda: optax.adafactor(learning_rate=0.3, decay_rate=0.8, multiply_by_parameter_scale=False,
                                        clipping_threshold=1.0, weight_decay_rate=1e-5)
# Weight decay on the test partition (`params_and_grads`): not on the LayerNorm scale nor the head's bias.
DECAYED = {"bert": {"prompt": {"prompt": True}, "gpc": {"cell": {"forget_kernel": True}},
                    "layer_norm": {"scale": False}},
           "classifier": {"kernel": True, "bias": False}}
# He et al.'s GLUE AdamW (§D(5)): adapters, LoRA, prefix tuning, MAM.
UNIFIED = lambda: optax.adamw(1e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1, mask=DECAYED)
# BitFit (lr 1e-4) and FL-tuning's bert4keras Adam + decoupled decay (§B(5)): eps 1e-6, wd 0.01.
BERT_ADAMW = lambda: optax.adamw(1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, mask=DECAYED)
# GPC (§C(5)): prompt lr 1e-2, the cell (and everything else trained) 1e-3, no decay.
GPC_LABELS = {"bert": {"prompt": {"prompt": "prompt"}, "gpc": {"cell": {"forget_kernel": "cell"}},
                       "layer_norm": {"scale": "cell"}}, "classifier": {"kernel": "cell", "bias": "cell"}}
GPC = lambda: optax.multi_transform(
    {"prompt": optax.adamw(1e-2, eps=1e-6, weight_decay=0.0), "cell": optax.adamw(1e-3, eps=1e-6, weight_decay=0.0)},
    GPC_LABELS)
DOCUMENTED = {
    "prompt_tuning": PROMPT_TUNING, "prompt_tuning_random": PROMPT_TUNING, "prompt_tuning_vocab": PROMPT_TUNING,
    "gpc": GPC,
    # t5x's fine-tuning Adafactor (§A(5)): lr 1e-3, decay 0.8, parameter scaling on, update clipping 1.0.
    "full_finetuning": lambda: optax.adafactor(1e-3, decay_rate=0.8, multiply_by_parameter_scale=True,
                                               clipping_threshold=1.0),
    "bitfit": BERT_ADAMW, "fl_tuning": BERT_ADAMW,
    "pasta": lambda: optax.adamw(2.5e-4, eps=1e-6, weight_decay=0.0),  # §E(5)
    "lora": UNIFIED, "lora_ffn": UNIFIED, "prefix_tuning": UNIFIED, "mam": UNIFIED, "parallel_adapter": UNIFIED,
    "parallel_adapter_attention": UNIFIED, "multihead_parallel_adapter": UNIFIED,
    "scaled_parallel_adapter": UNIFIED, "sequential_adapter": UNIFIED, "sequential_adapter_pfeiffer": UNIFIED,
}


def params_and_grads(steps=3):
  """A trainable partition with a prompt, a GPC cell, a norm, a bias and a head ([4, 3] / [3]), and `steps`
  gradients; parameters far from RMS 1 so that Adafactor's parameter scaling shows."""
  rng = np.random.default_rng(0)
  shapes = {"bert": {"prompt": {"prompt": (4, 3)}, "gpc": {"cell": {"forget_kernel": (3, 3)}},
                     "layer_norm": {"scale": (3,)}},
            "classifier": {"kernel": (3, 2), "bias": (2,)}}
  draw = lambda scale: jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, scale, s), jnp.float32), shapes,
                                              is_leaf=lambda s: isinstance(s, tuple))
  return draw(3.0), [draw(1.0) for _ in range(steps)]


def trajectory(optimizer):
  """How far each parameter has moved after each of three updates, flattened: [steps, n]."""
  params, grads = params_and_grads()
  flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
  start, state, path = flat(params), optimizer.init(params), []
  for grad in grads:
    updates, state = optimizer.update(grad, state, params)
    params = optax.apply_updates(params, updates)
    path.append(flat(params) - start)
  return np.stack(path)


def resolved(gin_files, bindings=()):
  gin_utils.parse_gin(gin_files, bindings)
  return trajectory(optimizers.gin_optimizer())


def test_every_method_file_is_covered_and_the_comparison_tells_the_optimizers_apart():
  shipped = {os.path.basename(p)[:-len(".gin")] for p in glob.glob(os.path.join(METHODS_DIR, "*.gin"))}
  assert shipped == set(DOCUMENTED)
  # NOTE: BitFit's AdamW and FL-tuning's bert4keras Adam + decoupled decay are the same optimizer (lr 1e-4,
  # eps 1e-6, wd 0.01 off norms and biases), so they are one reference.
  distinct = list({id(make): make for make in DOCUMENTED.values()}.values())
  paths = [trajectory(make()) for make in distinct]
  for i in range(len(paths)):
    for j in range(i):
      assert not np.allclose(paths[i], paths[j], rtol=1e-3, atol=1e-9), (distinct[i], distinct[j])
  # The prompt-tuning reference pins each of its hyperparameters.
  for changed in (dict(learning_rate=0.1), dict(decay_rate=0.5), dict(multiply_by_parameter_scale=True)):
    other = optax.adafactor(**{**dict(learning_rate=0.3, decay_rate=0.8, multiply_by_parameter_scale=False,
                                      clipping_threshold=1.0, weight_decay_rate=1e-5), **changed})
    assert not np.allclose(trajectory(other), paths[0], rtol=1e-3, atol=1e-9), changed


@pytest.mark.parametrize("method", sorted(DOCUMENTED))
def test_method_file_resolves_its_documented_optimizer(method):
  got = resolved(["models/minilm.gin", f"methods/{method}.gin"])
  np.testing.assert_allclose(got, trajectory(DOCUMENTED[method]()), rtol=1e-5, atol=1e-9, err_msg=method)


def test_results_gpc_keeps_the_shared_prompt_optimizer():
  # results/gpc.gin includes methods/gpc.gin, then results/prompt_optimizer.gin's linear decays win.
  got = resolved(["models/minilm.gin", "results/gpc.gin"], ["TRAIN_STEPS = 10"])
  decaying = lambda peak: optax.adamw(optax.linear_schedule(peak, 0.0, 10), eps=1e-6, weight_decay=0.0)
  # prompt 3e-2: the random init's swept rate (results/prompt_optimizer.gin, docs/RESULTS.md §4).
  expected = optax.multi_transform({"prompt": decaying(3e-2), "cell": decaying(1e-3)}, GPC_LABELS)
  np.testing.assert_allclose(got, trajectory(expected), rtol=1e-5, atol=1e-9)
  assert not np.allclose(got, trajectory(GPC()), rtol=1e-3, atol=1e-9)


def bindings_of(gin_files):
  """The binding lines of gin.config_str() after parsing `gin_files` (imports and comments left out)."""
  gin_utils.parse_gin(gin_files, finalize=False)
  return {line for line in gin.config_str(max_line_length=10_000).splitlines()
          if line.strip() and not line.startswith(("#", "from ", "import "))}


# What each prompt variant binds on top of methods/prompt_tuning.gin, which it includes (directly or through
# another variant); every other binding must be the included one's.
PROMPT_VARIANTS = {
    "prompt_tuning_random": ["PROMPT_INIT = @prompt_init.RandomUniform()"],
    "prompt_tuning_vocab": ["PROMPT_INIT = @prompt_init.SampledVocab()"],
    "gpc": ["PROMPT_INIT = @prompt_init.SampledVocab()", "OPTIMIZER = @optimizers.gpc_optimizer()",
            "slots.Slots.layer_input_hook = @gpc.gpc_factory", "gpc.gpc_factory.placement = %PROMPT_PLACEMENT",
            "gpc.gpc_factory.prompt_length = %PROMPT_LENGTH"],
}


@pytest.mark.parametrize("variant", sorted(PROMPT_VARIANTS))
def test_prompt_variants_include_the_prompt_block_and_change_only_their_own_bindings(variant):
  path = gin_utils.resolve_gin_file(f"methods/{variant}.gin")
  base_text = open(gin_utils.resolve_gin_file("methods/prompt_tuning.gin")).read()
  assert base_text in gin_utils.gin_texts(path)[1:], f"{variant}.gin does not include methods/prompt_tuning.gin"
  assert "prompts.prompt_factory" not in open(path).read(), f"{variant}.gin still copies the prompt block"
  base = bindings_of(["models/minilm.gin", "methods/prompt_tuning.gin"])
  own = set(PROMPT_VARIANTS[variant])
  replaced = {line.split(" = ")[0] for line in own}
  expected = {line for line in base if line.split(" = ")[0] not in replaced} | own
  assert bindings_of(["models/minilm.gin", f"methods/{variant}.gin"]) == expected
