"""Prompt ensembles: one bank forward equals K single-prompt runs; vote and mean-log-prob combiners."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.evaluation import ensemble, metrics, rank_classification
from prompt_tuning_jax.models import inputs
from prompt_tuning_jax.models.slots import Slots

K = 3
BACKBONES = {
    "t5": ("models/t5_1_1_small.gin", [
        "t5_config.preset.vocab_size = 64", "t5_config.preset.embed_dim = 16", "t5_config.preset.num_heads = 2",
        "t5_config.preset.head_dim = 8", "t5_config.preset.mlp_dim = 32", "t5_config.preset.num_encoder_layers = 2",
        "t5_config.preset.num_decoder_layers = 2"]),
    "bert": ("models/bert_base.gin", [
        "bert_config.preset.vocab_size = 128", "bert_config.preset.embed_dim = 16", "NUM_LABELS = 3",
        "bert_config.preset.num_heads = 2", "bert_config.preset.head_dim = 8", "bert_config.preset.mlp_dim = 32",
        "bert_config.preset.num_layers = 2"]),
}


def build(backbone, num_prompts):
  """A tiny gin-configured model with a bank of `num_prompts` prompts of length 3 -> (model, param shapes)."""
  model_file, bindings = BACKBONES[backbone]
  gin_utils.parse_gin([model_file, "methods/prompt_tuning_random.gin"],
                      bindings + ["PROMPT_LENGTH = 3", f"prompts.prompt_factory.num_prompts = {num_prompts}"])
  model = gin_utils.configured_macro("MODEL")
  args, kwargs = inputs.example_inputs(model)
  return model, nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *args, **kwargs)["params"])


def random_like(shapes, rng):
  """NOTE: numpy draws, not model.init: compiling the init costs seconds on CPU (tests need random weights)."""
  return jax.tree_util.tree_map(lambda s: rng.normal(0.0, 0.5, s.shape).astype(s.dtype), shapes)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_bank_forward_equals_single_prompt_runs(backbone):
  # NOTE: gin binds the prompt factory when the module is applied, so each model runs before the next parse.
  single_model, shapes = build(backbone, 1)
  rng = np.random.default_rng(0)
  base = random_like(shapes, rng)
  trained = []  # K "trained" single-prompt trees: shared frozen leaves, their own prompt [1, P, d]
  for _ in range(K):
    tree = jax.tree_util.tree_map(lambda x: x, base)
    holder = tree["encoder"] if backbone == "t5" else tree["bert"]  # the module holding prompt/prompt
    holder["prompt"] = {"prompt": rng.uniform(-0.5, 0.5, holder["prompt"]["prompt"].shape).astype(np.float32)}
    trained.append(tree)
  batch = inputs.example_batch(single_model, batch_size=4, length=6)
  labels = np.array([[5, 1, 0], [7, 9, 1], [11, 1, 0]], np.int32) if backbone == "t5" else None
  singles = [np.asarray(rank_classification.score_batch(single_model, tree, batch, labels)) for tree in trained]

  bank_model, _ = build(backbone, K)
  bank = ensemble.stack_prompt_params(trained)
  bank_leaf = [v for k, v in flatten_params(bank).items() if k.endswith("prompt/prompt")]
  assert len(bank_leaf) == 1 and bank_leaf[0].shape == (K, 3, 16)
  scores = np.asarray(ensemble.ensemble_scores(bank_model, bank, batch, K, labels))
  assert scores.shape == (K, 4, 3)
  for k, single in enumerate(singles):
    np.testing.assert_allclose(scores[k], single, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(scores[k].argmax(-1), single.argmax(-1))
  assert not np.allclose(scores[0], scores[1])  # the prompts differ, so do their scores



def test_stack_runs_gives_the_bank_model_and_refuses_runs_that_differ_beyond_their_prompts():
  model, shapes = build("bert", 1)
  rng = np.random.default_rng(1)
  base = random_like(shapes, rng)
  runs = [{**base, "bert": {**base["bert"], "prompt": {"prompt": rng.uniform(-0.5, 0.5, (1, 3, 16)).astype(np.float32)}}}
          for _ in range(2)]
  stacked_model, stacked = ensemble.stack_runs(model, runs, ["run0", "run1"])
  args, kwargs = inputs.example_inputs(stacked_model)
  abstract = flatten_params(nn.meta.unbox(jax.eval_shape(stacked_model.init, jax.random.key(0), *args,
                                                         **kwargs)["params"]))
  bank = flatten_params(stacked)["bert/prompt/prompt"]
  assert abstract["bert/prompt/prompt"].shape == bank.shape == (2, 3, 16)
  for k, run in enumerate(runs):
    np.testing.assert_array_equal(bank[k], run["bert"]["prompt"]["prompt"][0])
  head_trained = {**runs[1], "classifier": {**runs[1]["classifier"], "bias": runs[1]["classifier"]["bias"] + 1}}
  with pytest.raises(ValueError, match=r"ensemble: classifier/bias differs between run0 and run1"):
    ensemble.stack_runs(model, [runs[0], head_trained], ["run0", "run1"])
  with pytest.raises(ValueError, match=r"an ensemble of 2 checkpoints needs a prompt method"):
    ensemble.stack_runs(model.clone(slots=Slots()), runs, ["run0", "run1"])

def test_tile_for_prompts_is_prompt_major():
  tiled, index = ensemble.tile_for_prompts({"x": np.arange(2)[:, None]}, 3)
  assert np.asarray(tiled["x"])[:, 0].tolist() == [0, 1, 0, 1, 0, 1]
  assert np.asarray(index).tolist() == [0, 0, 1, 1, 2, 2]


def test_combiners_and_their_tie_breaks():
  log = np.log
  scores = log(np.array([  # [K=3, b=3, C=3]
      [[.6, .3, .1], [.5, .4, .1], [.2, .3, .5]],
      [[.6, .3, .1], [.1, .8, .1], [.3, .2, .5]],
      [[.1, .8, .1], [.3, .3, .4], [.1, .1, .8]]]))
  # Example 0: 2 votes for class 0. Example 1: one vote each; summed log-prob favours class 1 (ties -> sum).
  # Example 2: all vote 2.
  assert ensemble.majority_vote(scores).tolist() == [0, 1, 2]
  np.testing.assert_array_equal(ensemble.mean_log_prob(scores), scores.mean(0).argmax(-1))
  assert ensemble.mean_log_prob(scores).tolist() == [1, 1, 2]  # the geometric mean favours class 1 in example 0
  equal = np.zeros((2, 1, 3))  # all scores equal -> the lowest id
  assert ensemble.majority_vote(equal).tolist() == [0] and ensemble.mean_log_prob(equal).tolist() == [0]


def test_evaluate_ensemble_report():
  scores = np.log(np.array([[[.9, .1], [.9, .1], [.1, .9]], [[.2, .8], [.9, .1], [.1, .9]]]))  # [2, 3, 2]
  report = ensemble.evaluate_ensemble(scores, [0, 0, 1], [metrics.accuracy], list)
  assert report == pytest.approx({
      "prompt_0/accuracy": 100.0, "prompt_1/accuracy": 200 / 3, "mean/accuracy": 250 / 3, "best/accuracy": 100.0,
      "majority_vote/accuracy": 100.0, "mean_log_prob/accuracy": 100.0})
  with pytest.raises(ValueError, match=r"n = 2 targets, got \(2, 3, 2\)"):
    ensemble.evaluate_ensemble(scores, [0, 0], [metrics.accuracy], list)


def test_stack_prompt_params_needs_a_prompt():
  with pytest.raises(ValueError, match="exactly one 'prompt/prompt' bank"):
    ensemble.stack_prompt_params([{"encoder": {"kernel": np.zeros(2)}}])
