"""Every shipped model gin file parses and builds the configured model (abstract shapes only)."""
import glob
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.models import t5_config

GIN_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "gin")
T5_FILES = sorted(glob.glob(os.path.join(GIN_DIR, "models", "*t5*.gin")))


def test_all_sizes_are_shipped():
  names = {os.path.basename(f)[:-4] for f in T5_FILES}
  assert names == set(t5_config.PRESETS)


@pytest.mark.parametrize("path", T5_FILES, ids=os.path.basename)
def test_t5_gin_builds_its_preset(path):
  name = os.path.basename(path)[:-4]
  gin_utils.parse_gin([f"models/{name}.gin"], ["t5_config.preset.dtype = 'bfloat16'"])
  model = gin_utils.configured_macro("MODEL")
  assert model.config == t5_config.preset(name, dtype="bfloat16")


def test_base_count_through_gin():
  gin_utils.parse_gin(["models/t5_1_1_base.gin"])
  model = gin_utils.configured_macro("MODEL")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 2), jnp.int32))
  assert sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(nn.meta.unbox(shapes))) == 247_577_856
