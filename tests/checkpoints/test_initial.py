"""INITIAL_CHECKPOINT_PATH loading: t5x and HF layouts into (scanned or unscanned) T5 models."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning_jax.checkpoints import hf_t5, t5x
from prompt_tuning_jax.checkpoints.initial import load_initial_checkpoint
from prompt_tuning_jax.models import t5_config
from prompt_tuning_jax.models.t5 import T5, unscan_params

CONFIG = t5_config.preset("t5_1_1_small", vocab_size=64, embed_dim=16, num_heads=2, head_dim=8, mlp_dim=24,
                          num_encoder_layers=2, num_decoder_layers=2)
ENC = np.array([[5, 6, 7, 1, 0]], np.int32)
DEC = np.array([[0, 9, 10]], np.int32)


@pytest.fixture(scope="module")
def params():
  return nn.meta.unbox(T5(CONFIG).init(jax.random.key(0), ENC, DEC)["params"])


@pytest.mark.slow
def test_t5x_checkpoint_into_unscanned_and_scanned_models(tmp_path, params):
  t5x.save_t5x_checkpoint(jax.tree_util.tree_map(np.asarray, params), str(tmp_path), step=7)
  loaded = load_initial_checkpoint(str(tmp_path), T5(CONFIG))
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)
  scanned_config = CONFIG.replace(scan_layers=True)
  scanned = load_initial_checkpoint(str(tmp_path), T5(scanned_config))
  jax.tree_util.tree_map(np.testing.assert_array_equal, unscan_params(scanned), params)
  np.testing.assert_allclose(T5(scanned_config).apply({"params": scanned}, ENC, DEC),
                             T5(CONFIG).apply({"params": params}, ENC, DEC), rtol=1e-5, atol=1e-5)


def test_hf_directory(tmp_path, params):
  hf_t5.export_hf_t5(params, CONFIG, str(tmp_path))
  loaded = load_initial_checkpoint(str(tmp_path), T5(CONFIG.replace(dtype="bfloat16")))
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)


def test_mismatched_config_is_named(tmp_path, params):
  hf_t5.export_hf_t5(params, CONFIG, str(tmp_path))
  with pytest.raises(ValueError, match="num_heads=2.*has 4"):
    load_initial_checkpoint(str(tmp_path), T5(CONFIG.replace(num_heads=4, head_dim=4)))


def test_wrong_shape_in_t5x_checkpoint_is_named(tmp_path, params):
  bad = jax.tree_util.tree_map(np.asarray, params)
  bad["encoder"]["layers_1"]["mlp"]["wo"]["kernel"] = np.zeros((5, 16), np.float32)
  t5x.save_t5x_checkpoint(bad, str(tmp_path))
  with pytest.raises(ValueError, match=r"encoder/layers_1/mlp/wo/kernel.*\(5, 16\).*\(24, 16\)"):
    load_initial_checkpoint(str(tmp_path), T5(CONFIG))
