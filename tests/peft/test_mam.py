"""MAM (gin/methods/mam.gin): a pure composition of prefix tuning and the scaled parallel FFN adapter."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.peft import adapters, prefix

TINY_T5 = ["t5_config.preset.vocab_size = 64", "t5_config.preset.embed_dim = 32", "t5_config.preset.num_heads = 4",
           "t5_config.preset.head_dim = 8", "t5_config.preset.mlp_dim = 64", "t5_config.preset.num_encoder_layers = 2",
           "t5_config.preset.num_decoder_layers = 2"]
DIRECT = ["prefix.prefix_factory.reparameterize = False"]


def built_slots(method_files, bindings=()):
  """The gin-configured model's slots, each factory called at once on one site.

  NOTE: gin-bound factories read their bindings when called, so they are called before the next parse.
  """
  gin_utils.parse_gin(["models/t5_1_1_small.gin"] + method_files, TINY_T5 + list(bindings))
  slots = gin_utils.configured_macro("MODEL").slots
  return {name: value(**SITES[name]) for name, value in vars(slots).items() if callable(value)}


SITES = {"attention_kv_prefix": dict(backbone="t5", where="decoder/self_attention", num_heads=4, head_dim=8),
         "post_mlp_adapter": dict(backbone="t5", where="encoder/mlp", embed_dim=32)}


def test_mam_binds_the_same_factories_as_its_parts():
  mam = built_slots(["methods/mam.gin"])
  assert set(mam) == {"attention_kv_prefix", "post_mlp_adapter"}
  assert mam["attention_kv_prefix"] == built_slots(["methods/prefix_tuning.gin"])["attention_kv_prefix"]
  assert mam["post_mlp_adapter"] == built_slots(["methods/scaled_parallel_adapter.gin"])["post_mlp_adapter"]
  adapter, prefix_module = mam["post_mlp_adapter"], mam["attention_kv_prefix"]
  assert isinstance(adapter, adapters.SublayerAdapter) and isinstance(prefix_module, prefix.PrefixMLP)
  assert (adapter.bottleneck_dim, adapter.scale, adapter.init_scheme, adapter.insertion) == (512, 4.0, "lora",
                                                                                             "parallel")
  assert (prefix_module.length, prefix_module.gated) == (30, True)
  assert built_slots(["methods/mam.gin"], ["PREFIX_LENGTH = 16"])["attention_kv_prefix"].length == 16


def logits(method_file, tokens, params=None):
  """(logits, params) of tiny T5 with a method (direct prefixes); `params` None: freshly initialised."""
  gin_utils.parse_gin(["models/t5_1_1_small.gin", method_file], TINY_T5 + DIRECT)
  model = gin_utils.configured_macro("MODEL")
  if params is None:
    params = nn.meta.unbox(model.init(jax.random.key(0), tokens, tokens[:, :3])["params"])
  return model.apply({"params": params}, tokens, tokens[:, :3]), params


@pytest.mark.slow
def test_mam_at_init_is_prefix_tuning_exactly():
  """The adapter starts at zero (LoRA-style init), so MAM equals prefix tuning with the same prefixes, bitwise."""
  tokens = np.random.default_rng(0).integers(2, 64, (2, 7)).astype(np.int32)
  tokens[1, 5:] = 0
  mam_logits, params = logits("methods/mam.gin", tokens)
  strip = lambda t: {k: strip(v) if isinstance(v, dict) else v for k, v in t.items() if k != "adapter_mlp"}
  prefix_logits, _ = logits("methods/prefix_tuning.gin", tokens, strip(params))
  np.testing.assert_array_equal(mam_logits, prefix_logits)
  layer = params["decoder"]["layers_1"]
  assert set(layer["adapter_mlp"]) == {"down", "up"} and not np.any(layer["adapter_mlp"]["up"]["kernel"])
  assert set(layer["encoder_decoder_attention"]["prefix"]) == {"key", "value"}


def test_mam_counts_t5_base(parameter_report):
  d, l, r = 768, 30, 512
  report = parameter_report(["models/t5_1_1_base.gin", "methods/mam.gin"], DIRECT)
  assert report["trainable_by_module"] == {"prefix": 2 * l * d * 36, "adapter_mlp": (2 * r * d + r + d) * 24}
  assert report["trainable_by_module"] == {"prefix": 1_658_880, "adapter_mlp": 18_905_088}  # METHODS §D(3)
  assert round(report["trainable_percent"], 1) == 7.7  # of all 268.1M parameters (base + MAM); 8.3% of the base
  training = parameter_report(["models/t5_1_1_base.gin", "methods/mam.gin"])  # + the MLP reparameterisation
  assert training["trainable_by_module"] == {"prefix": 36 * (l * d + d * 800 + 800 + 800 * 2 * d + 2 * d),
                                             "adapter_mlp": 18_905_088}


@pytest.mark.parametrize("reparameterize,prefix_count", [
    (False, 294_912), (True, 12 * (16 * 768 + 768 * 800 + 800 + 800 * 1536 + 1536))])
def test_mam_counts_bert_base_glue_config(reparameterize, prefix_count, parameter_report):
  """exps/run_glue.sh: l = 16, r = 16, s = 2 (METHODS §D(3)): 294,912 + 304,320, plus the trained head."""
  bindings = ["PREFIX_LENGTH = 16", "ADAPTER_DIM = 16", "ADAPTER_SCALE = 2.0",
              f"prefix.prefix_factory.reparameterize = {reparameterize}"]
  report = parameter_report(["models/bert_base.gin", "methods/mam.gin"], bindings)
  assert report["trainable_by_module"] == {"prefix": prefix_count, "adapter_mlp": 304_320, "classifier": 1_538}
