"""T5 1.0 / 1.1 against transformers' PyTorch T5 on the same random weights, plus structure checks."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax.checkpoints import hf_t5
from prompt_tuning_jax.models import t5_config
from prompt_tuning_jax.models.t5 import T5, scan_params, shift_right, unscan_params

TINY = dict(vocab_size=256, embed_dim=64, num_heads=4, head_dim=16, mlp_dim=96,
            num_encoder_layers=2, num_decoder_layers=3)


def tiny_config(variant: str, **overrides) -> t5_config.T5Config:
  return t5_config.preset(f"{variant}_small", **{**TINY, **overrides})


def batch(rng: np.random.Generator, vocab: int, b: int = 3, l: int = 40, t: int = 7):
  """Random tokens with per-row padding (0) at the end; every row keeps >= 5 real tokens."""
  enc = rng.integers(2, vocab, (b, l)).astype(np.int32)
  dec = rng.integers(2, vocab, (b, t)).astype(np.int32)
  for i, n in enumerate(rng.integers(5, l, b)):
    enc[i, n:] = 0
  enc[0, :] = np.maximum(enc[0], 2)  # one row without padding
  return enc, shift_right(jnp.asarray(dec)).__array__()


def init_params(config, enc, dec, seed=0):
  variables = T5(config).init(jax.random.key(seed), enc, dec)
  params = nn.meta.unbox(variables["params"])
  # Random relative-position and norm weights so that every parameter matters in the comparison.
  k1, k2 = jax.random.split(jax.random.key(seed + 1))
  leaves, tree = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(k1, len(leaves))
  def jitter(path, x, k):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return x + 0.2 * jax.random.normal(k, x.shape)
    return x
  return jax.tree_util.tree_unflatten(tree, [jitter(p, x, k) for (p, x), k in zip(leaves, keys)])


@pytest.mark.parametrize("variant,buckets", [("t5_1_0", {}), ("t5_1_1", {}), (
    "t5_1_1", {"relative_attention_num_buckets": 16, "relative_attention_max_distance": 20})])
def test_matches_transformers(variant, buckets):
  config = tiny_config(variant, **buckets)  # 16 buckets up to distance 20: length 40 reaches the log buckets' cap
  enc, dec = batch(np.random.default_rng(0), config.vocab_size)
  params = init_params(config, enc, dec)
  model = T5(config)
  encoded, mask = model.apply({"params": params}, enc, method=T5.encode)
  logits = model.apply({"params": params}, enc, dec)

  reference = hf_t5.to_transformers(params, config)
  with torch.no_grad():
    out = reference(input_ids=torch.from_numpy(enc).long(), attention_mask=torch.from_numpy(enc > 0).long(),
                    decoder_input_ids=torch.from_numpy(dec).long(), output_hidden_states=False)
  ref_encoded = out.encoder_last_hidden_state.numpy()
  ref_logits = out.logits.numpy()
  real = enc > 0
  enc_diff = np.abs(np.asarray(encoded)[real] - ref_encoded[real]).max()
  logit_diff = np.abs(np.asarray(logits) - ref_logits).max()
  print(f"{variant}: max |encoder diff| {enc_diff:.2e}, max |logit diff| {logit_diff:.2e}")
  np.testing.assert_array_equal(np.asarray(mask), real)
  np.testing.assert_allclose(np.asarray(encoded)[real], ref_encoded[real], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-4, atol=1e-4)
  assert np.abs(ref_logits).max() > 1.0  # the comparison is not between near-zero tensors


@pytest.mark.parametrize("variant", ["t5_1_0", "t5_1_1"])
def test_hf_export_round_trip(tmp_path, variant):
  config = tiny_config(variant)
  enc, dec = batch(np.random.default_rng(1), config.vocab_size)
  params = init_params(config, enc, dec)
  hf_t5.export_hf_t5(params, config, str(tmp_path))
  model, loaded = hf_t5.load_hf_t5(str(tmp_path))
  assert model.config == config
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, loaded)


@pytest.mark.parametrize("variant", ["t5_1_0", "t5_1_1"])
def test_loads_a_directory_that_transformers_wrote(tmp_path, variant):
  config = tiny_config(variant)
  enc, dec = batch(np.random.default_rng(4), config.vocab_size)
  params = init_params(config, enc, dec)
  hf_t5.to_transformers(params, config).save_pretrained(str(tmp_path))  # T5ForConditionalGeneration's own names
  model, loaded = checkpoints.load_hf_t5(str(tmp_path))  # the package-level loader
  assert model.config == config
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, loaded)


def test_bad_hf_tensors_give_one_line_errors_naming_the_parameter():
  config = tiny_config("t5_1_1")
  enc, dec = batch(np.random.default_rng(6), config.vocab_size)
  tensors = hf_t5.hf_tensors(init_params(config, enc, dec), config)
  name = "encoder.block.1.layer.1.DenseReluDense.wo.weight"
  missing = {k: v for k, v in tensors.items() if k != name}
  unexpected = {**tensors, "encoder.block.9.layer.0.SelfAttention.q.weight": np.zeros((4, 4), np.float32)}
  wrong = {**tensors, name: np.zeros((5, 7), np.float32)}
  for bad, expected in ((missing, (name, "encoder/layers_1/mlp/wo/kernel")),
                        (unexpected, ("encoder.block.9.layer.0.SelfAttention.q.weight",)),
                        (wrong, (name, "(5, 7)", str(tensors[name].shape)))):
    with pytest.raises(ValueError) as error:
      hf_t5.params_from_hf(config, bad, source="ckpt_dir")
    message = str(error.value)
    assert "\n" not in message and "ckpt_dir" in message
    assert all(part in message for part in expected), message


@pytest.mark.parametrize("scan_layers", [False, True])
def test_bfloat16_activations_stay_close_to_float32(scan_layers):
  config = tiny_config("t5_1_1")
  enc, dec = batch(np.random.default_rng(5), config.vocab_size)
  params = init_params(config, enc, dec)
  expected = T5(config).apply({"params": params}, enc, dec)
  low = config.replace(dtype="bfloat16", scan_layers=scan_layers)
  got = T5(low).apply({"params": scan_params(params) if scan_layers else params}, enc, dec)
  assert got.dtype == jnp.float32 and bool(jnp.isfinite(got).all())  # logits come back in float32
  error = np.abs(np.asarray(got) - np.asarray(expected)).max()
  assert 0.0 < error < 0.1 * np.abs(np.asarray(expected)).max()  # bf16 really ran, and stays close


def test_scanned_model_matches_unscanned():
  config = tiny_config("t5_1_1")
  enc, dec = batch(np.random.default_rng(2), config.vocab_size)
  params = init_params(config, enc, dec)
  expected = T5(config).apply({"params": params}, enc, dec)
  scanned_config = config.replace(scan_layers=True)
  scanned = scan_params(params)
  abstract = jax.eval_shape(T5(scanned_config).init, jax.random.key(0), enc, dec)["params"]
  assert jax.tree_util.tree_structure(nn.meta.unbox(abstract)) == jax.tree_util.tree_structure(scanned)
  got = T5(scanned_config).apply({"params": scanned}, enc, dec)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  jax.tree_util.tree_map(np.testing.assert_array_equal, unscan_params(scanned), params)


def count_params(config) -> int:
  shapes = jax.eval_shape(T5(config).init, jax.random.key(0), jnp.ones((1, 4), jnp.int32),
                          jnp.ones((1, 2), jnp.int32))
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(nn.meta.unbox(shapes)))


@pytest.mark.parametrize("name,total", [("t5_1_1_base", 247_577_856), ("t5_1_0_base", 222_903_552)])
def test_parameter_counts(name, total):
  assert count_params(t5_config.preset(name)) == total


# Every parameter of a 1+1-layer T5 1.1: path -> (shape, logical axes). Shapes follow the config,
# names follow t5x, so t5x checkpoints load without renaming.
D, F, N, H, V, B = 8, 12, 2, 3, 16, 4
GOLDEN = {
    "token_embedder/embedding": ((V, D), ("vocab", "embed")),
    "encoder/relpos_bias/rel_embedding": ((N, B), ("heads", "relpos_buckets")),
    "encoder/encoder_norm/scale": ((D,), ("embed",)),
    "encoder/layers_0/pre_attention_layer_norm/scale": ((D,), ("embed",)),
    "encoder/layers_0/pre_mlp_layer_norm/scale": ((D,), ("embed",)),
    **{f"encoder/layers_0/attention/{p}/kernel": ((D, N * H), ("embed", "joined_kv")) for p in ("query", "key", "value")},
    "encoder/layers_0/attention/out/kernel": ((N * H, D), ("joined_kv", "embed")),
    "encoder/layers_0/mlp/wi_0/kernel": ((D, F), ("embed", "mlp")),
    "encoder/layers_0/mlp/wi_1/kernel": ((D, F), ("embed", "mlp")),
    "encoder/layers_0/mlp/wo/kernel": ((F, D), ("mlp", "embed")),
    "decoder/relpos_bias/rel_embedding": ((N, B), ("heads", "relpos_buckets")),
    "decoder/decoder_norm/scale": ((D,), ("embed",)),
    "decoder/logits_dense/kernel": ((D, V), ("embed", "vocab")),
    **{f"decoder/layers_0/{n}/scale": ((D,), ("embed",))
       for n in ("pre_self_attention_layer_norm", "pre_cross_attention_layer_norm", "pre_mlp_layer_norm")},
    **{f"decoder/layers_0/{a}/{p}/kernel": ((D, N * H), ("embed", "joined_kv"))
       for a in ("self_attention", "encoder_decoder_attention") for p in ("query", "key", "value")},
    **{f"decoder/layers_0/{a}/out/kernel": ((N * H, D), ("joined_kv", "embed"))
       for a in ("self_attention", "encoder_decoder_attention")},
    "decoder/layers_0/mlp/wi_0/kernel": ((D, F), ("embed", "mlp")),
    "decoder/layers_0/mlp/wi_1/kernel": ((D, F), ("embed", "mlp")),
    "decoder/layers_0/mlp/wo/kernel": ((F, D), ("mlp", "embed")),
}


def test_shapes_and_axes_golden():
  config = t5_config.T5Config(vocab_size=V, embed_dim=D, num_heads=N, head_dim=H, mlp_dim=F,
                              num_encoder_layers=1, num_decoder_layers=1, relative_attention_num_buckets=B)
  abstract = jax.eval_shape(T5(config).init, jax.random.key(0), jnp.ones((1, 4), jnp.int32),
                            jnp.ones((1, 2), jnp.int32))["params"]
  flat = {"/".join(k.key for k in path): leaf for path, leaf in
          jax.tree_util.tree_flatten_with_path(abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]}
  got = {k: (v.value.shape, tuple(v.names)) for k, v in flat.items()}
  assert got == GOLDEN


@pytest.mark.parametrize("variant", ["t5_1_0", "t5_1_1"])
def test_identity_modules_in_every_slot_are_the_base_model_exactly(variant, identity_slots):
  slots, calls = identity_slots
  config = tiny_config(variant)
  enc, dec = batch(np.random.default_rng(3), config.vocab_size)
  params = init_params(config, enc, dec)
  out_base = T5(config).apply({"params": params}, enc, dec)
  out_hooked = T5(config, slots).apply({"params": params}, enc, dec)
  np.testing.assert_array_equal(out_hooked, out_base)
  wi = ("wi_0", "wi_1") if variant == "t5_1_1" else ("wi",)
  attention = ("encoder/attention", "decoder/self_attention", "decoder/encoder_decoder_attention")
  assert sorted(set(calls), key=str) == sorted([
      ("input_transform", "encoder", "t5", None), ("layer_input_hook", "encoder", "t5", None),
      *[("projection_delta", w, "t5", t) for w in attention for t in ("query", "key", "value", "out")],
      *[("projection_delta", f"{s}/mlp", "t5", t) for s in ("encoder", "decoder") for t in (*wi, "wo")],
      *[("attention_head_adapter", w, "t5", None) for w in attention],
      *[("mlp_extra", f"{s}/mlp", "t5", None) for s in ("encoder", "decoder")],
      *[("post_attention_adapter", w, "t5", None) for w in attention],
      *[("post_mlp_adapter", f"{s}/mlp", "t5", None) for s in ("encoder", "decoder")]], key=str)
