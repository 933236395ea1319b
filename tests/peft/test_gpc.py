"""Global Prompt Cell (reconstructed): the cell equations against numpy, limits, identity and counts."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.models import bert, bert_stack, t5_config
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.models.t5 import T5
from prompt_tuning_jax.models.t5_layers import EncoderLayer
from prompt_tuning_jax.peft import gpc, prompts

T5_TINY = t5_config.preset("t5_1_1_small", vocab_size=128, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                           num_encoder_layers=3, num_decoder_layers=2)
P, D = 4, 32


def tokens():
  ids = np.random.default_rng(0).integers(2, 128, (2, 7)).astype(np.int32)
  ids[1, 5:] = 0
  return ids


def slots(prompt_only=False, **cell):
  prompt = functools.partial(prompts.prompt_factory, prompt_length=P)
  hook = None if prompt_only else functools.partial(gpc.gpc_factory, prompt_length=P, **cell)
  return Slots(input_transform=prompt, layer_input_hook=hook)


def rms_norm(x, scale):
  return x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-6) * scale


def reference_cell(params, h_rows, cell, num_gates, diagonal, normalize, combine, max_gate_sum=1.0):
  """numpy: the METHODS §C(1) equations, with the gate bound, for one layer -> (rows fed to the layer, new C)."""
  sigmoid = lambda z: 1 / (1 + np.exp(-z))
  hidden, memory = h_rows, cell
  if normalize:
    hidden, memory = rms_norm(hidden, params["hidden_norm"]["scale"]), rms_norm(memory, params["cell_norm"]["scale"])
  x = np.concatenate([hidden, memory], -1)

  def gate(name):
    w, b = np.asarray(params[f"{name}_kernel"]), np.asarray(params[f"{name}_bias"])
    z = w[:D] * hidden + w[D:] * memory if diagonal else np.einsum("bme,ed->bmd", x, w)
    return sigmoid(z + b)

  forget = gate("forget")
  remember = gate("remember") if num_gates == 2 else 1 - forget
  if num_gates == 2 and max_gate_sum is not None:
    total = forget + remember
    forget, remember = [np.where(total > max_gate_sum, g * max_gate_sum / total, g) for g in (forget, remember)]
  new_cell = forget * cell + remember * h_rows
  return (new_cell if combine == "replace" else h_rows + new_cell), new_cell


# NOTE: max_gate_sum=None is the first reconstruction's default (free gates); 1.0 the current one.
@pytest.mark.parametrize("num_gates,diagonal,normalize,combine,offset,max_gate_sum", [
    (2, False, False, "replace", 0, 1.0), (2, False, True, "add", 1, 1.0), (1, False, True, "replace", 0, 1.0),
    (2, True, False, "replace", 1, 1.0), (1, True, True, "add", 0, 1.0), (2, False, False, "replace", 0, None),
    (2, True, True, "add", 1, None), (2, False, False, "replace", 1, 0.7)])
def test_one_layer_matches_numpy(num_gates, diagonal, normalize, combine, offset, max_gate_sum):
  gates = functools.partial(gpc.CellGates, D, num_gates, diagonal, normalize, max_gate_sum=max_gate_sum)
  cell = gpc.GlobalPromptCell(P, offset, 3, D, combine=combine, cell_factory=gates)
  rng = np.random.default_rng(1)
  h0, h1 = (jnp.asarray(rng.normal(size=(2, P + 6, D)) * s, jnp.float32) for s in (1.0, 3.0))
  context = {"tokens": jnp.ones((2, 6), jnp.int32)}
  call = lambda params, h, layer, state: cell.apply(params, h, layer=layer, state=state, context=context)
  variables = nn.meta.unbox(cell.init(jax.random.key(0), h0, layer=1, state=h0[:, offset:offset + P],
                                      context=context))
  # Random non-trivial weights (the init, N(0, 0.02) and biases +-1.5, gives nearly constant gates).
  randomize = lambda path, x: rng.normal(size=x.shape).astype(np.float32) * 0.1 + ("scale" in str(path))
  variables = jax.tree_util.tree_map_with_path(randomize, variables)
  out0, c0 = call(variables, h0, 0, None)
  np.testing.assert_array_equal(out0, h0)  # layer 0: no cell, C^0 = the prompt rows entering it
  np.testing.assert_array_equal(c0, h0[:, offset:offset + P])
  out1, c1 = call(variables, h1, 1, c0)
  rows, expected_cell = reference_cell(variables["params"]["cell"], np.asarray(h1[:, offset:offset + P]),
                                       np.asarray(c0), num_gates, diagonal, normalize, combine, max_gate_sum)
  np.testing.assert_allclose(c1, expected_cell, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out1[:, offset:offset + P], rows, rtol=1e-5, atol=1e-5)
  text = np.r_[0:offset, offset + P:P + 6]
  np.testing.assert_array_equal(np.asarray(out1)[:, text], np.asarray(h1)[:, text])  # text rows untouched


def test_bounded_gates_keep_the_cell_within_its_inputs():
  """Property, on random inputs and weights: F + R <= 1, and |C^l| <= max(|C^{l-1}|, |H_P^l|) elementwise.

  NOTE: a row-norm bound |C^l| <= max(|C^{l-1}|, |H_P^l|) does NOT follow from per-element gates (C = (1, 0),
  H = (0, 1), F = (1, 0), R = (0, 1) gives |C^l| = sqrt(2)); the elementwise bound does, and with it
  |C^l| <= sqrt(|C^{l-1}|^2 + |H_P^l|^2). The free gates (max_gate_sum=None) break it on the same inputs.
  """
  rng = np.random.default_rng(4)
  h = jnp.asarray(rng.normal(size=(8, P, D)) * rng.uniform(0.1, 30, (8, P, 1)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(8, P, D)) * rng.uniform(0.1, 30, (8, P, 1)), jnp.float32)
  for diagonal in (False, True):
    gates = {bound: gpc.CellGates(D, 2, diagonal, forget_bias=2.0, remember_bias=2.0, max_gate_sum=bound)
             for bound in (1.0, None)}
    variables = nn.meta.unbox(gates[1.0].init(jax.random.key(0), h, c))
    variables = jax.tree_util.tree_map(lambda x: x + rng.normal(size=x.shape).astype(np.float32) * 0.3, variables)
    limit = np.maximum(np.abs(h), np.abs(c))
    for bound, module in gates.items():
      forget, remember = module.apply(variables, h, c)
      new_cell = np.asarray(forget * c + remember * h)
      if bound is None:
        assert (np.asarray(forget + remember) > 1.2).any() and (np.abs(new_cell) > limit * 1.1).any()
        continue
      assert np.all(np.asarray(forget + remember) <= 1 + 1e-6)
      assert np.all(np.abs(new_cell) <= limit * (1 + 1e-6))
      norms = lambda x: np.linalg.norm(x, axis=-1)
      assert np.all(norms(new_cell) <= np.sqrt(norms(h) ** 2 + norms(c) ** 2) * (1 + 1e-6))


BERT_TINY = BertConfig(vocab_size=97, embed_dim=D, num_heads=4, head_dim=8, mlp_dim=48, num_layers=3,
                       max_position_embeddings=24)


def layer_inputs(model, params, args, layer_cls):
  """The hidden states entering every encoder layer, recorded with a method interceptor."""
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, layer_cls) and context.method_name == "__call__":
      seen.append(np.asarray(args[0]))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.apply({"params": params}, *args)
  return seen


@pytest.mark.parametrize("backbone", ["t5", "bert"])
def test_carry_nothing_new_feeds_p0_to_every_layer(backbone):
  """Forget gate 1, remember gate 0 (saturated biases), replace: deep-prompt-like, every layer sees P^0."""
  ids = tokens()
  cell = slots(forget_bias=1e3, remember_bias=-1e3)
  if backbone == "t5":
    model, args, layer_cls, offset = T5(T5_TINY, cell), (ids, ids[:, :3]), EncoderLayer, 0
  else:  # BERT: the prompt and the cell's rows sit after [CLS]
    model, args, layer_cls, offset = bert.BertModel(BERT_TINY, cell), (ids % 97,), bert_stack.BertLayer, 1
  params = nn.meta.unbox(model.init(jax.random.key(0), *args)["params"])
  seen = layer_inputs(model, params, args, layer_cls)
  prompt = (params["encoder"] if backbone == "t5" else params)["prompt"]["prompt"][0]
  assert len(seen) == 3
  for x in seen:
    np.testing.assert_array_equal(x[:, offset:offset + P], np.broadcast_to(prompt, (2, P, D)))
  text = np.r_[0:offset, offset + P:P + 7]
  assert not np.allclose(seen[1][:, text], seen[0][:, text])  # while the text rows do evolve


@pytest.mark.parametrize("max_gate_sum", [1.0, None])
def test_bert_prompt_rows_stay_bounded_through_the_layers(max_gate_sum):
  """Open gates (F ~ R ~ 0.98) on a 6-layer post-LN BERT: with F + R <= 1 the prompt rows entering every layer
  stay within the elementwise range of P^0 and the prompt rows every earlier layer put out, at the text rows'
  scale; the free gates add the layer outputs up, and the rows grow with depth."""
  config = BERT_TINY.replace(num_layers=6)
  ids = tokens() % 97
  model = bert.BertModel(config, slots(forget_bias=4.0, remember_bias=4.0, max_gate_sum=max_gate_sum))
  params = nn.meta.unbox(model.init(jax.random.key(0), ids)["params"])
  seen, outputs = [], []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, bert_stack.BertLayer) and context.method_name == "__call__":
      seen.append(np.asarray(args[0])[:, 1:1 + P])
      outputs.append(np.asarray(out)[:, 1:1 + P])
    return out

  with nn.intercept_methods(record):
    model.apply({"params": params}, ids)
  norms = [np.linalg.norm(x, axis=-1).mean() for x in seen]
  layer_output_norm = np.mean([np.linalg.norm(x, axis=-1).mean() for x in outputs])
  if max_gate_sum is None:
    assert norms[-1] > 3 * layer_output_norm and np.all(np.diff(norms[1:]) > 0), norms
    return
  limit = np.abs(seen[0])
  for layer in range(1, 6):
    limit = np.maximum(limit, np.abs(outputs[layer - 1]))  # P^0 and H_P^1..H_P^layer
    assert np.all(np.abs(seen[layer]) <= limit * (1 + 1e-5)), layer
  assert max(norms[1:]) < 1.5 * layer_output_norm, norms


@pytest.mark.parametrize("combine,forget_bias,remember_bias", [("replace", -1e3, 1e3), ("add", -1e3, -1e3)])
def test_pass_through_cell_is_prompt_tuning_exactly(combine, forget_bias, remember_bias):
  """C^l = H_P^l (replace) or C^l = 0 (add): the output is vanilla prompt tuning's, bit for bit."""
  ids = tokens()
  model = T5(T5_TINY, slots(combine=combine, forget_bias=forget_bias, remember_bias=remember_bias))
  params = nn.meta.unbox(model.init(jax.random.key(0), ids, ids[:, :3])["params"])
  plain = T5(T5_TINY, slots(prompt_only=True))
  plain_params = {**params, "encoder": {k: v for k, v in params["encoder"].items() if k != "gpc"}}
  np.testing.assert_array_equal(model.apply({"params": params}, ids, ids[:, :3]),
                                plain.apply({"params": plain_params}, ids, ids[:, :3]))


def test_gate_input_norms_default_to_t5_only():
  ids = tokens()
  t5_params = jax.eval_shape(T5(T5_TINY, slots()).init, jax.random.key(0), ids, ids[:, :3])["params"]
  bert_params = jax.eval_shape(bert.BertModel(BERT_TINY, slots()).init, jax.random.key(0), ids)["params"]
  assert {"hidden_norm", "cell_norm"} <= set(t5_params["encoder"]["gpc"]["cell"])
  assert not {"hidden_norm", "cell_norm"} & set(bert_params["encoder"]["gpc"]["cell"])


def test_prompt_length_mismatch_is_a_clear_error():
  ids = tokens()
  hook = functools.partial(gpc.gpc_factory, prompt_length=P + 1)
  model = T5(T5_TINY, Slots(input_transform=functools.partial(prompts.prompt_factory, prompt_length=P),
                            layer_input_hook=hook))
  with pytest.raises(ValueError, match=r"prompt_length=5 prompt rows: encoder length 11 != input length 7 \+ 5"):
    model.init(jax.random.key(0), ids, ids[:, :3])


def test_factory_rejects_unknown_switches():
  make = functools.partial(gpc.gpc_factory, where="encoder", backbone="t5", num_layers=2, embed_dim=D,
                           prompt_length=P)
  with pytest.raises(ValueError, match="num_gates=3; expected 1"):
    make(num_gates=3)
  with pytest.raises(ValueError, match="combine='mix'; expected 'replace' or 'add'"):
    make(combine="mix")
  with pytest.raises(ValueError, match="max_gate_sum=0; expected a positive bound"):
    make(max_gate_sum=0)
  assert gpc.gpc_factory(where="decoder", backbone="t5", num_layers=2, embed_dim=D, prompt_length=P) is None


@pytest.mark.parametrize("bindings,expected", [
    ([], 4 * 768 ** 2 + 2 * 768 + 2 * 768),                                   # + RMSNorm scales (T5 default)
    (["gpc.gpc_factory.normalize_inputs = False"], 2_360_832),                # METHODS §C(3)
    (["gpc.gpc_factory.diagonal_gates = True", "gpc.gpc_factory.normalize_inputs = False"], 4_608),
    (["gpc.gpc_factory.num_gates = 1", "gpc.gpc_factory.normalize_inputs = False"], 2 * 768 ** 2 + 768),
    (["gpc.gpc_factory.share_gates = False"], 11 * (4 * 768 ** 2 + 4 * 768)),  # cell_1..cell_11
])
def test_counts_t5_1_1_base(bindings, expected, parameter_report):
  report = parameter_report(["models/t5_1_1_base.gin", "methods/gpc.gin"], bindings)
  assert report["trainable_by_module"] == {"gpc": expected, "prompt": 100 * 768}


def test_count_bert_base(parameter_report):
  report = parameter_report(["models/bert_base.gin", "methods/gpc.gin"])
  assert report["trainable_by_module"] == {"gpc": 2_360_832, "prompt": 76_800, "classifier": 1_538}
