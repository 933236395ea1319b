"""Prefix tuning (peft/prefix.py) through models/attention.py: the gated identity of METHODS §D(1) against an
einsum re-implementation, the plain-addition ablation, KV-cache decoding, folding the MLP, counts."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from prompt_tuning_jax.models import bert, decoding, t5_config
from prompt_tuning_jax.models.attention import MultiHeadAttention
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.models.t5 import T5, scan_params, shift_right
from prompt_tuning_jax.peft import prefix

N, H, D, P = 3, 4, 10, 5  # heads, head_dim, embed, prefix length
T5_TINY = t5_config.preset("t5_1_1_small", vocab_size=64, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                           num_encoder_layers=2, num_decoder_layers=2)
BERT_TINY = BertConfig(vocab_size=97, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=48, num_layers=2,
                       max_position_embeddings=24)


def prefix_slots(**kwargs):
  return Slots(attention_kv_prefix=functools.partial(prefix.prefix_factory, length=P, **kwargs))


def init(model, *args, **kwargs):
  return nn.meta.unbox(model.init(jax.random.key(0), *args, **kwargs)["params"])


def heads(x, params, name):
  """x [b, l, d] through the frozen projection `name` -> [b, l, n, h]."""
  y = x @ params[name]["kernel"] + params[name].get("bias", 0.0)
  return y.reshape(y.shape[:-1] + (N, H))


def reference(params, xq, xkv, mask, bias, scale, gated):
  """§D(1): (1 - λ) attn(K) + λ softmax(q P_kᵀ) P_v (gated) or attn(K) + softmax(q P_kᵀ) P_v, then `out`."""
  q, k, v = heads(xq, params, "query"), heads(xkv, params, "key"), heads(xkv, params, "value")
  pk, pv = (params["prefix"][name].reshape(P, N, H) for name in ("key", "value"))
  logits = np.einsum("bqnh,bknh->bnqk", q, k) * scale + bias
  logits = np.where(mask, logits, -np.inf)  # masked keys drop out of every sum
  prefix_logits = np.einsum("bqnh,pnh->bnqp", q, pk) * scale  # no bias, never masked
  attn = np.einsum("bnqk,bknh->bqnh", softmax(logits, -1), v)
  prefix_attn = np.einsum("bnqp,pnh->bqnh", softmax(prefix_logits, -1), pv)
  if gated:
    lam = np.exp(logsumexp(prefix_logits, -1) - np.logaddexp(logsumexp(prefix_logits, -1), logsumexp(logits, -1)))
    lam = np.transpose(lam, (0, 2, 1))[..., None]  # [b, n, q] -> [b, q, n, 1]
    out = (1 - lam) * attn + lam * prefix_attn
  else:
    out = attn + prefix_attn
  out = out.reshape(out.shape[:2] + (N * H,))
  return out @ params["out"]["kernel"] + params["out"].get("bias", 0.0)


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("kind", ["t5_cross", "t5_causal", "bert"])
def test_attention_with_prefix_is_the_gated_adapter(kind, gated):
  rng = np.random.default_rng(0)
  b, q_len = 2, 4
  kv_len = 6 if kind == "t5_cross" else q_len
  xq = rng.normal(size=(b, q_len, D)).astype(np.float32)
  xkv = rng.normal(size=(b, kv_len, D)).astype(np.float32) if kind == "t5_cross" else xq
  if kind == "t5_causal":
    mask = np.tril(np.ones((q_len, q_len), bool))[None, None]  # [1, 1, q, k]
  else:
    mask = np.ones((b, 1, 1, kv_len), bool)
    mask[1, ..., kv_len - 2:] = False  # padding keys
  t5 = kind.startswith("t5")
  bias = rng.normal(size=(1, N, q_len, kv_len)).astype(np.float32) if t5 else None
  attention = MultiHeadAttention(N, H, "decoder/self_attention", logit_scale=1.0 if t5 else None, use_bias=not t5,
                                 slots=prefix_slots(reparameterize=False, gated=gated))
  params = init(attention, xq, xkv, mask, bias)
  params = jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(np.float32) * 0.5, params)
  got = attention.apply({"params": params}, xq, xkv, mask, bias)
  scale = 1.0 if t5 else H ** -0.5
  expected = reference(params, xq, xkv, mask, 0.0 if bias is None else bias, scale, gated)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def t5_setup(reparameterize):
  tokens = np.random.default_rng(0).integers(2, 64, (2, 7)).astype(np.int32)
  tokens[1, 5:] = 0
  model = T5(T5_TINY, prefix_slots(reparameterize=reparameterize))
  params = init(model, tokens, tokens[:, :3])
  return model, params, tokens


@pytest.mark.slow
def test_t5_decoder_kv_cache_gives_the_full_forward_logits():
  model, params, tokens = t5_setup(reparameterize=False)
  params = jax.tree_util.tree_map_with_path(  # prefixes large enough to matter
      lambda path, x: x * 50 if path[-2].key == "prefix" else x, params)
  targets = np.random.default_rng(1).integers(2, 64, (2, 6)).astype(np.int32)
  decoder_tokens = np.asarray(shift_right(targets))
  full = model.apply({"params": params}, tokens, decoder_tokens)
  encoded, mask = model.apply({"params": params}, tokens, method="encode")
  steps = decoder_tokens.shape[1]
  decode = functools.partial(model.apply, max_decode_length=steps, decode=True, method="decode", mutable=["cache"])
  _, shapes = jax.eval_shape(decode, {"params": params}, encoded, mask, decoder_tokens)  # as models/decoding.py
  cache = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])
  step = jax.jit(decode)
  for i in range(steps):
    logits, updated = step({"params": params, "cache": cache}, encoded, mask, decoder_tokens[:, i:i + 1],
                           decoder_positions=np.full((2, 1), i, np.int32))
    cache = updated["cache"]
    np.testing.assert_allclose(logits[:, 0], full[:, i], rtol=1e-5, atol=1e-5)
  # The public greedy search agrees with teacher forcing on its own output.
  generated = decoding.greedy_decode(model, params, tokens, max_decode_length=steps, eos_id=-1)
  forced = model.apply({"params": params}, tokens, np.asarray(shift_right(generated)))
  np.testing.assert_array_equal(generated, np.argmax(forced, -1))


def test_folded_mlp_prefixes_give_the_same_t5():
  model, params, tokens = t5_setup(reparameterize=True)
  direct = T5(T5_TINY, prefix_slots(reparameterize=False))
  folded = prefix.fold_prefix_mlp(params)
  expected_shapes = jax.tree_util.tree_map(np.shape, init(direct, tokens, tokens[:, :3]))
  assert jax.tree_util.tree_map(np.shape, folded) == expected_shapes
  np.testing.assert_allclose(direct.apply({"params": folded}, tokens, tokens[:, :3]),
                             model.apply({"params": params}, tokens, tokens[:, :3]), rtol=1e-5, atol=1e-5)
  # Scanned stacks (a leading layer axis on every leaf) fold layer by layer.
  jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-6),
                         prefix.fold_prefix_mlp(scan_params(params)), scan_params(folded))


def test_folded_mlp_prefixes_give_the_same_bert():
  tokens = np.random.default_rng(0).integers(2, 90, (2, 7)).astype(np.int32)
  model = bert.BertForSequenceClassification(BERT_TINY, prefix_slots(reparameterize=True))
  direct = bert.BertForSequenceClassification(BERT_TINY, prefix_slots(reparameterize=False))
  params = init(model, tokens)
  np.testing.assert_allclose(direct.apply({"params": prefix.fold_prefix_mlp(params)}, tokens),
                             model.apply({"params": params}, tokens), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="no MLP-reparameterised 'prefix'"):
    prefix.fold_prefix_mlp(prefix.fold_prefix_mlp(params))


def test_modules_shapes_inits_and_gate_flag():
  make = functools.partial(prefix.prefix_factory, where="encoder/attention", backbone="t5", num_heads=12,
                           head_dim=64, length=30)
  direct, mlp = make(reparameterize=False), make()
  assert direct.name == mlp.name == "prefix" and direct.gated and mlp.gated
  assert not make(gated=False).gated
  keys, values, gated = direct.apply({"params": init(direct, 3)}, 3)
  assert keys.shape == values.shape == (3, 30, 12, 64) and gated is True
  ungated = make(reparameterize=False, gated=False)
  assert ungated.apply({"params": init(ungated, 2)}, 2)[2] is False  # the slot contract carries the flag
  params = init(direct, 3)
  assert abs(float(np.std(params["key"])) - 0.02) < 1e-3 and params["key"].shape == (30, 768)
  boxed = jax.eval_shape(lambda rng: mlp.init(rng, 3), jax.random.key(0))["params"]
  assert boxed["embedding"].names == ("prefix", "embed") and boxed["embedding"].value.shape == (30, 768)
  assert boxed["hidden"]["kernel"].value.shape == (768, 800) and boxed["output"]["kernel"].value.shape == (800, 1536)
  with pytest.raises(ValueError, match=r"called at 'encoder/mlp'; known sites"):
    make(where="encoder/mlp")
  with pytest.raises(ValueError, match="prefix length=0; expected at least 1"):
    make(length=0)


@pytest.mark.parametrize("model_file,sites", [("models/t5_1_1_base.gin", 36), ("models/bert_base.gin", 12)])
def test_counts_base_models(model_file, sites, parameter_report):
  l, d, m = 30, 768, 800
  extra = {"classifier": 1_538} if "bert" in model_file else {}
  direct = parameter_report([model_file, "methods/prefix_tuning.gin"], ["prefix.prefix_factory.reparameterize = False"])
  assert direct["trainable_by_module"] == {"prefix": sites * 2 * l * d, **extra}  # 2·l·d per sublayer (§D(3))
  mlp = parameter_report([model_file, "methods/prefix_tuning.gin"])  # training-time, with the reparameterisation
  assert mlp["trainable_by_module"] == {"prefix": sites * (l * d + d * m + m + m * 2 * d + 2 * d), **extra}
