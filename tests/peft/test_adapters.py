"""Adapters (peft/adapters.py): numpy references, exact identity at LoRA-style init, names, errors, counts."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.models import bert, t5_config
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.models.t5 import T5
from prompt_tuning_jax.peft import adapters

T5_TINY = t5_config.preset("t5_1_1_small", vocab_size=128, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                           num_encoder_layers=2, num_decoder_layers=2)
BERT_TINY = BertConfig(vocab_size=97, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=48, num_layers=2,
                       max_position_embeddings=24)
D, R = 16, 6


def init(module, *args, **kwargs):
  return nn.meta.unbox(module.init(jax.random.key(0), *args, **kwargs)["params"])


def randomize(params, seed=1):
  """Every leaf redrawn N(0, 0.5), so zero biases and up kernels take part in the comparison."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda x: (rng.normal(size=x.shape) * 0.5).astype(np.float32), params)


def np_norm(z, params, kind):
  if kind is None:
    return z
  if kind == "t5":
    return z / np.sqrt(np.mean(z ** 2, -1, keepdims=True) + 1e-6) * params["input_norm"]["scale"]
  centered = z - z.mean(-1, keepdims=True)
  normed = centered / np.sqrt(np.mean(centered ** 2, -1, keepdims=True) + 1e-5)
  return normed * params["input_norm"]["scale"] + params["input_norm"]["bias"]


def np_bottleneck(z, params, kind, scale, heads=1):
  """s · (ReLU(N(z) W_down + b) W_up + b'), per head when heads > 1 (independent of the module's code)."""
  hidden = np.maximum(np_norm(z, params, kind) @ params["down"]["kernel"] + params["down"]["bias"], 0)
  up = params["up"]
  if heads == 1:
    out = hidden @ up["kernel"] + up["bias"]
  else:
    hidden = hidden.reshape(hidden.shape[:-1] + (heads, -1))
    out = np.stack([hidden[..., i, :] @ up["kernel"][i] + up["bias"][i] for i in range(heads)], -2)
    out = out.reshape(out.shape[:-2] + (-1,))
  return out * (params["scale"] if scale == "learned" else scale)


@pytest.mark.parametrize("insertion", ["sequential", "parallel", "pfeiffer"])
@pytest.mark.parametrize("norm,scale", [(None, 1.0), ("t5", 4.0), ("bert", "learned")])
def test_sublayer_adapter_matches_numpy(insertion, norm, scale):
  rng = np.random.default_rng(0)
  x, out = rng.normal(size=(2, 5, D)).astype(np.float32), rng.normal(size=(2, 5, D)).astype(np.float32)
  adapter = adapters.SublayerAdapter(R, "bert", norm, scale, insertion=insertion)
  params = randomize(init(adapter, x, out))
  got = adapter.apply({"params": params}, x, out)
  if insertion == "pfeiffer":
    z = x + out
    z = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-12)
  else:
    z = out if insertion == "sequential" else x
  np.testing.assert_allclose(got, out + np_bottleneck(z, params, norm, scale), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("multi_head", [False, True])
def test_head_adapter_matches_numpy(multi_head):
  x = np.random.default_rng(0).normal(size=(2, 5, D)).astype(np.float32)
  adapter = adapters.HeadAdapter(R, "bert", "bert", 2.0, num_heads=4, head_dim=3, multi_head=multi_head)
  params = randomize(init(adapter, x))
  got = adapter.apply({"params": params}, x)
  assert got.shape == (2, 5, 12)
  expected = np_bottleneck(x, params, "bert", 2.0, 4 if multi_head else 1)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  if multi_head:
    assert params["down"]["kernel"].shape == (D, 4 * R) and params["up"]["kernel"].shape == (4, R, 3)


def lora_init_slots(mlp_insertion="parallel"):
  """Every adapter kind at once, LoRA-style init (up = 0); the FFN adapter inserted as `mlp_insertion`."""
  make = functools.partial(adapters.adapter_factory, bottleneck_dim=4, init="lora")
  return Slots(post_attention_adapter=functools.partial(make, insertion="sequential", input_norm=True,
                                                        scale="learned"),
               post_mlp_adapter=functools.partial(make, insertion=mlp_insertion, scale=4.0),
               attention_head_adapter=functools.partial(adapters.head_adapter_factory, bottleneck_dim=3, init="lora",
                                                        multi_head=True))


def without_adapters(tree):
  return {k: without_adapters(v) if isinstance(v, dict) else v for k, v in tree.items()
          if not k.startswith("adapter")}


@pytest.mark.parametrize("backbone,mlp_insertion", [("t5", "parallel"), ("bert", "pfeiffer"), ("bert", "parallel")])
def test_lora_init_is_the_base_model_exactly(backbone, mlp_insertion):
  tokens = np.random.default_rng(0).integers(2, 90, (2, 7)).astype(np.int32)
  tokens[1, 5:] = 0
  if backbone == "t5":
    make, args = (lambda slots: T5(T5_TINY, slots)), (tokens, tokens[:, :4])
  else:
    make, args = (lambda slots: bert.BertForSequenceClassification(BERT_TINY, slots)), (tokens,)
  model = make(lora_init_slots(mlp_insertion))
  params = init(model, *args)
  expected = make(Slots()).apply({"params": without_adapters(params)}, *args)
  got = model.apply({"params": params}, *args)
  np.testing.assert_array_equal(got, expected)
  # And the adapters are live: a non-zero up projection changes the output.
  moved = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.1 if any(getattr(k, "key", "") == "up" for k in path) else x, params)
  assert not np.allclose(model.apply({"params": moved}, *args), expected)


def test_t5_module_names_and_axes():
  tokens = np.ones((1, 4), np.int32)
  model = T5(T5_TINY, lora_init_slots())
  boxed = jax.eval_shape(model.init, jax.random.key(0), tokens, tokens)["params"]
  layer = boxed["decoder"]["layers_0"]
  assert {"adapter_self_attention", "adapter_encoder_decoder_attention", "adapter_mlp"} <= set(layer)
  assert set(boxed["encoder"]["layers_0"]["attention"]["adapter_heads"]) == {"input_norm", "down", "up"}
  assert set(layer["adapter_self_attention"]) == {"input_norm", "down", "up", "scale"}
  assert set(layer["adapter_mlp"]) == {"down", "up"}  # no input norm, fixed scale
  names = lambda box: tuple(box.names)
  assert names(layer["adapter_mlp"]["down"]["kernel"]) == ("embed", "adapter")
  assert names(layer["adapter_mlp"]["up"]["bias"]) == ("embed",)
  assert names(layer["self_attention"]["adapter_heads"]["up"]["kernel"]) == ("heads", "adapter", "kv")


def test_inits_and_dropout():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 50, 256)), jnp.float32)
  bert_init = init(adapters.SublayerAdapter(64, "bert"), x, x)
  assert abs(float(np.std(bert_init["down"]["kernel"])) - 0.02) < 2e-3 and np.std(bert_init["up"]["kernel"]) > 0
  assert not np.any(bert_init["down"]["bias"]) and not np.any(bert_init["up"]["bias"])
  lora = init(adapters.SublayerAdapter(64, "lora"), x, x)
  bound = 1 / np.sqrt(256)  # PyTorch kaiming_uniform_(a=sqrt(5)) on [in=256, out]
  assert np.abs(lora["down"]["kernel"]).max() <= bound and np.abs(lora["down"]["kernel"]).max() > 0.95 * bound
  assert not np.any(lora["up"]["kernel"])
  adapter = adapters.SublayerAdapter(64, "bert", dropout_rate=0.5)
  params = randomize(init(adapter, x, x))
  eval_out = adapter.apply({"params": params}, x, x)
  train_out = adapter.apply({"params": params}, x, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(eval_out, train_out)
  np.testing.assert_array_equal(eval_out, adapter.apply({"params": params}, x, x, deterministic=True))


def test_factory_names_and_errors():
  make = functools.partial(adapters.adapter_factory, backbone="t5", embed_dim=D, bottleneck_dim=R)
  assert make(where="decoder/encoder_decoder_attention").name == "adapter_encoder_decoder_attention"
  assert make(where="encoder/mlp", insertion="pfeiffer").insertion == "sequential"  # pre-LN T5 (docstring)
  assert make(where="encoder/mlp", backbone="bert", insertion="pfeiffer").insertion == "pfeiffer"
  assert make(where="encoder/attention", input_norm=True).norm == "t5"
  with pytest.raises(ValueError, match=r"insertion='serial'; known: \('sequential', 'parallel', 'pfeiffer'\)"):
    make(where="encoder/mlp", insertion="serial")
  with pytest.raises(ValueError, match="bind it to post_mlp_adapter, not at 'encoder/attention'"):
    make(where="encoder/attention", insertion="pfeiffer")
  with pytest.raises(ValueError, match=r"init='xavier'; known: \['bert', 'lora'\]"):
    make(where="encoder/mlp", init="xavier")
  with pytest.raises(ValueError, match="scale='learnable'; expected a number or 'learned'"):
    make(where="encoder/mlp", scale="learnable")
  with pytest.raises(ValueError, match="bottleneck_dim=0; expected at least 1"):
    adapters.head_adapter_factory(where="encoder/attention", backbone="bert", embed_dim=D, num_heads=2, head_dim=8,
                                  bottleneck_dim=0)


def adapter_params(d, r, norm=0):
  return 2 * r * d + r + d + norm


HOULSBY_ATTENTION = 12 * adapter_params(768, 200, 768)  # r = 200 + the RMSNorm scale, per T5 stack and type


@pytest.mark.parametrize("method,t5_counts,bert_counts", [
    ("sequential_adapter",  # Houlsby: norms on the attention adapters (RMS d on T5, LayerNorm 2d on BERT)
     {"adapter_attention": HOULSBY_ATTENTION, "adapter_self_attention": HOULSBY_ATTENTION,
      "adapter_encoder_decoder_attention": HOULSBY_ATTENTION, "adapter_mlp": 24 * adapter_params(768, 200)},
     {"adapter_attention": 12 * adapter_params(768, 200, 2 * 768), "adapter_mlp": 12 * adapter_params(768, 200)}),
    ("sequential_adapter_pfeiffer", {"adapter_mlp": 24 * adapter_params(768, 600)},
     {"adapter_mlp": 12 * adapter_params(768, 600)}),
    ("parallel_adapter", {"adapter_mlp": 7_396_032}, {"adapter_mlp": 12 * adapter_params(768, 200)}),
    ("scaled_parallel_adapter", {"adapter_mlp": 18_905_088}, {"adapter_mlp": 12 * adapter_params(768, 512)}),
    ("parallel_adapter_attention", {"adapter_heads": 36 * adapter_params(768, 30, 768)},
     {"adapter_heads": 12 * adapter_params(768, 30, 2 * 768)}),
    ("multihead_parallel_adapter",  # down 768 -> 12*30 (+ bias), up 12 x [30, 64] (+ bias [12, 64])
     {"adapter_heads": 36 * (768 * 360 + 360 + 12 * 30 * 64 + 768 + 768)},
     {"adapter_heads": 12 * (768 * 360 + 360 + 12 * 30 * 64 + 768 + 2 * 768)}),
])
def test_counts_base_models(method, t5_counts, bert_counts, parameter_report):
  assert parameter_report(["models/t5_1_1_base.gin", f"methods/{method}.gin"])["trainable_by_module"] == t5_counts
  report = parameter_report(["models/bert_base.gin", f"methods/{method}.gin"])
  assert report["trainable_by_module"] == {**bert_counts, "classifier": 1_538}


# --- Inside the model: every adapter kind at its call site, against transformers' T5 / BERT with torch hooks ---
# The hooks add A(z) where METHODS.md §D(2) puts it, independent of our call sites: post-sublayer adapters on the
# attention / FFN output with z = that output (sequential), the sublayer's input (parallel: T5's RMS-normed input,
# BERT's stream) or N0(stream + output) (Pfeiffer, BERT); head adapters on the concatenated heads before the output
# projection, from the attention's query input. Dropout is off, so before / after the dropout is the same here.

def torch_bottleneck(z, params, norm, scale, heads=1):
  """A(z) of `np_bottleneck` in torch (the hooks run inside transformers' forward)."""
  import torch  # pylint: disable=g-import-not-at-top
  t = lambda a: torch.from_numpy(np.asarray(a, np.float32))
  if norm == "t5":
    z = z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6) * t(params["input_norm"]["scale"])
  elif norm == "bert":
    z = torch.nn.functional.layer_norm(z, z.shape[-1:], t(params["input_norm"]["scale"]),
                                       t(params["input_norm"]["bias"]), eps=1e-5)
  hidden = torch.relu(z @ t(params["down"]["kernel"]) + t(params["down"]["bias"]))
  if heads == 1:
    out = hidden @ t(params["up"]["kernel"]) + t(params["up"]["bias"])
  else:
    hidden = hidden.reshape(hidden.shape[:-1] + (heads, -1))
    out = torch.einsum("blnr,nrh->blnh", hidden, t(params["up"]["kernel"])) + t(params["up"]["bias"])
    out = out.reshape(out.shape[:-2] + (-1,))
  return out * (float(params["scale"]) if scale == "learned" else scale)


IN_MODEL_CASES = {  # name -> (attention adapter, FFN adapter, head adapter): (insertion, input_norm, scale) each
    "sequential_attention_scaled_parallel_ffn_multihead": (("sequential", True, "learned"), ("parallel", False, 4.0),
                                                           (True, "learned")),
    "parallel_attention_sequential_ffn_head": (("parallel", False, 2.0), ("sequential", True, 1.0), (False, 1.0)),
    "pfeiffer_ffn": (None, ("pfeiffer", False, 1.0), None),
}


def in_model_slots(case, backbone):
  attention, mlp, head = IN_MODEL_CASES[case]
  make = functools.partial(adapters.adapter_factory, bottleneck_dim=5, dropout_rate=0.0)
  slots = {"post_mlp_adapter": functools.partial(make, insertion=mlp[0], input_norm=mlp[1], scale=mlp[2])}
  if attention:
    slots["post_attention_adapter"] = functools.partial(make, insertion=attention[0], input_norm=attention[1],
                                                        scale=attention[2])
  if head:
    slots["attention_head_adapter"] = functools.partial(adapters.head_adapter_factory, bottleneck_dim=3,
                                                        multi_head=head[0], scale=head[1], dropout_rate=0.0)
  del backbone
  return Slots(**slots)


def randomize_adapters(tree, rng):
  """Adapter leaves redrawn N(0, 0.2) (N(1, 0.2) for norm scales and the learned scale): every term acts."""
  def redraw(path, x):
    names = [getattr(k, "key", "") for k in path]
    if not any(n.startswith("adapter") for n in names):
      return x
    centre = 1.0 if names[-1] == "scale" else 0.0
    return (centre + 0.2 * rng.normal(size=np.shape(x))).astype(np.float32)
  return jax.tree_util.tree_map_with_path(redraw, tree)


def hook_sublayer(module, adapter_params, spec, norm, stream=None):
  """Adds A(z) to `module`'s output (a tensor, or the first item of a tuple); z per `spec`'s insertion. `stream`:
  a callable giving the stream the sublayer reads (parallel on BERT, Pfeiffer); else z = the module's input."""
  insertion, input_norm, scale = spec
  def hook(mod, args, kwargs, output):
    del mod
    out = output[0] if isinstance(output, tuple) else output
    x = stream() if stream is not None else (args[0] if args else kwargs["hidden_states"])
    if insertion == "pfeiffer":
      z = torch_standardize(x + out)
    else:
      z = out if insertion == "sequential" else x
    out = out + torch_bottleneck(z, adapter_params, norm if input_norm else None, scale)
    return (out,) + tuple(output[1:]) if isinstance(output, tuple) else out
  return module.register_forward_hook(hook, with_kwargs=True)


def torch_standardize(z):
  import torch  # pylint: disable=g-import-not-at-top
  return (z - z.mean(-1, keepdim=True)) * torch.rsqrt(z.var(-1, unbiased=False, keepdim=True) + 1e-12)


def hook_heads(attention_module, out_projection, adapter_params, spec, num_heads, norm, query_input=None):
  """Adds the head adapter A(x) to the concatenated heads entering `out_projection`; x = the attention's query
  input (captured by a pre-hook on `attention_module`, or `query_input()`)."""
  multi_head, scale = spec
  seen = {}
  def capture(mod, args, kwargs):
    del mod
    seen["x"] = args[0] if args else kwargs["hidden_states"]
  def add(mod, args):
    del mod
    x = query_input() if query_input is not None else seen["x"]
    return (args[0] + torch_bottleneck(x, adapter_params, norm, scale, num_heads if multi_head else 1),)
  return [attention_module.register_forward_pre_hook(capture, with_kwargs=True),
          out_projection.register_forward_pre_hook(add)]


@pytest.mark.parametrize("case", ["sequential_attention_scaled_parallel_ffn_multihead",
                                  "parallel_attention_sequential_ffn_head"])
def test_t5_adapters_in_the_model_match_transformers_with_hooks(case):
  import torch  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import hf_t5  # pylint: disable=g-import-not-at-top
  attention, mlp, head = IN_MODEL_CASES[case]
  rng = np.random.default_rng(3)
  tokens = rng.integers(2, 120, (2, 7)).astype(np.int32)
  tokens[1, 5:] = 0
  decoder_tokens = rng.integers(1, 120, (2, 4)).astype(np.int32)
  model = T5(T5_TINY, in_model_slots(case, "t5"))
  params = randomize_adapters(init(model, tokens, decoder_tokens), rng)
  got = np.asarray(model.apply({"params": params}, tokens, decoder_tokens))

  reference = hf_t5.to_transformers(without_adapters(params), T5_TINY)
  handles = []
  for stack_name, stack in (("encoder", reference.encoder), ("decoder", reference.decoder)):
    for i, block in enumerate(stack.block):
      ours = params[stack_name][f"layers_{i}"]
      sublayers = ([("attention", block.layer[0].SelfAttention)] if stack_name == "encoder" else
                   [("self_attention", block.layer[0].SelfAttention),
                    ("encoder_decoder_attention", block.layer[1].EncDecAttention)])
      for name, module in sublayers:
        handles.append(hook_sublayer(module, ours[f"adapter_{name}"], attention, "t5"))
        handles += hook_heads(module, module.o, ours[name]["adapter_heads"], head, T5_TINY.num_heads, "t5")
      handles.append(hook_sublayer(block.layer[-1].DenseReluDense, ours["adapter_mlp"], mlp, "t5"))
  with torch.no_grad():
    expected = reference(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                         attention_mask=torch.from_numpy((tokens > 0).astype(np.int64)),
                         decoder_input_ids=torch.from_numpy(decoder_tokens.astype(np.int64))).logits.numpy()
  for handle in handles:
    handle.remove()
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  with torch.no_grad():  # the adapters act: without the hooks transformers' logits move
    base = reference(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                     decoder_input_ids=torch.from_numpy(decoder_tokens.astype(np.int64))).logits.numpy()
  assert np.abs(base - expected).max() > 1e-2


@pytest.mark.parametrize("case", list(IN_MODEL_CASES))
def test_bert_adapters_in_the_model_match_transformers_with_hooks(case):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import hf_bert  # pylint: disable=g-import-not-at-top
  attention, mlp, head = IN_MODEL_CASES[case]
  rng = np.random.default_rng(4)
  tokens = rng.integers(2, 90, (2, 7)).astype(np.int32)
  tokens[1, 5:] = 0
  model = bert.BertForSequenceClassification(BERT_TINY, in_model_slots(case, "bert"))
  params = randomize_adapters(init(model, tokens), rng)
  got = np.asarray(model.apply({"params": params}, tokens))

  hf_config = transformers.BertConfig(**hf_bert.hf_config_from_bert(BERT_TINY), attn_implementation="eager")
  reference = transformers.BertForSequenceClassification(hf_config).eval()
  state = {k: torch.from_numpy(np.array(v)) for k, v in hf_bert.hf_tensors(without_adapters(params), BERT_TINY).items()}
  missing, unexpected = reference.load_state_dict(state, strict=False)
  assert not missing and not unexpected, (missing, unexpected)
  handles = []
  for i, layer in enumerate(reference.bert.encoder.layer):
    ours, streams = params["bert"]["encoder"][f"layers_{i}"], {}
    def keep(key, store=streams):
      def capture(mod, args, kwargs):
        del mod
        store[key] = args[0] if args else kwargs["hidden_states"]
      return capture
    handles.append(layer.attention.register_forward_pre_hook(keep("h"), with_kwargs=True))  # the layer input h
    handles.append(layer.intermediate.register_forward_pre_hook(keep("a"), with_kwargs=True))  # a = LN1(h + ...)
    if attention:
      handles.append(hook_sublayer(layer.attention.output.dense, ours["adapter_attention"], attention, "bert",
                                   stream=lambda s=streams: s["h"]))
    if head:
      handles += hook_heads(layer.attention, layer.attention.output.dense, ours["attention"]["adapter_heads"], head,
                            BERT_TINY.num_heads, "bert", query_input=lambda s=streams: s["h"])
    handles.append(hook_sublayer(layer.output.dense, ours["adapter_mlp"], mlp, "bert",
                                 stream=lambda s=streams: s["a"]))
  with torch.no_grad():
    expected = reference(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                         attention_mask=torch.from_numpy((tokens > 0).astype(np.int64))).logits.numpy()
  for handle in handles:
    handle.remove()
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  with torch.no_grad():
    base = reference(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                     attention_mask=torch.from_numpy((tokens > 0).astype(np.int64))).logits.numpy()
  assert np.abs(base - expected).max() > 1e-3
