"""Mesh and logical-axis rules: rule specs, the non-divisible fallback, and an 8-device T5 loss check.

The multi-device check runs this file as a script in a subprocess with 8 forced CPU devices:
`python tests/train/test_partitioning.py [--scan_layers]` prints the single-device and the sharded loss.
"""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from prompt_tuning_jax.train import partitioning

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESH_2X4 = AbstractMesh((2, 4), ("data", "model"))


def boxed(shape, names):
  return nn.LogicallyPartitioned(jax.ShapeDtypeStruct(shape, jnp.float32), names)


def specs(tree, mesh=MESH_2X4, rules=partitioning.LOGICAL_AXIS_RULES):
  shardings = partitioning.logical_to_mesh_sharding(tree, mesh, rules)
  return jax.tree.map(lambda s: s.spec, shardings)


def test_rules_map_t5_parameters():
  tree = {
      "token_embedder": boxed((256, 64), ("vocab", "embed")),
      "query": boxed((64, 96), ("embed", "joined_kv")),
      "wi_0": boxed((64, 128), ("embed", "mlp")),
      "wo": boxed((128, 64), ("mlp", "embed")),
      "rel_embedding": boxed((4, 32), ("heads", "relpos_buckets")),
      "scale": boxed((64,), ("embed",)),
      "scanned_wi": boxed((2, 64, 128), ("layers", "embed", "mlp")),
      "prompt": boxed((20, 64), ("prompt", "embed")),
      "plain": jnp.zeros((8, 8)),
  }
  assert specs(tree) == {
      "token_embedder": P("model", None), "query": P(None, "model"), "wi_0": P(None, "model"),
      "wo": P("model", None), "rel_embedding": P("model", None), "scale": P(None),
      "scanned_wi": P(None, None, "model"), "prompt": P(None, None), "plain": P(),
  }


def test_unknown_names_replicate_and_rules_are_overridable():
  tree = {"x": boxed((8, 8), ("some_new_axis", "mlp"))}
  assert specs(tree) == {"x": P(None, "model")}
  assert specs(tree, rules=(("some_new_axis", "data"), ("mlp", "model"))) == {"x": P("data", "model")}
  assert all(isinstance(name, str) for name, _ in partitioning.LOGICAL_AXIS_RULES)
  for name in ("prompt", "adapter", "lora_rank", "prefix", "special_tokens", "fl_units", "positions"):
    assert dict(partitioning.LOGICAL_AXIS_RULES)[name] is None


def test_non_divisible_dimension_is_replicated(caplog):
  tree = {"encoder": {"rel_embedding": boxed((6, 32), ("heads", "relpos_buckets")),
                      "wi": boxed((64, 96), ("embed", "mlp"))}}
  with caplog.at_level("WARNING", logger=partitioning.__name__):
    result = specs(tree)
  assert result == {"encoder": {"rel_embedding": P(None, None), "wi": P(None, "model")}}
  assert "encoder/rel_embedding" in caplog.text and "'heads'" in caplog.text
  assert "encoder/wi" not in caplog.text


def test_create_mesh():
  mesh = partitioning.create_mesh()
  assert mesh.axis_names == ("data", "model")
  assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
  with pytest.raises(ValueError, match=rf"num_partitions=3 .* devices {jax.device_count() * 2}"):
    partitioning.create_mesh(num_partitions=3, devices=jax.devices() * 2)


@pytest.mark.slow
@pytest.mark.parametrize("scan_layers", [False, True])
def test_sharded_loss_matches_single_device(scan_layers):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))}
  args = [sys.executable, os.path.abspath(__file__)] + (["--scan_layers"] if scan_layers else [])
  proc = subprocess.run(args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  print(proc.stdout)
  losses = json.loads(proc.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(losses["sharded"], losses["single_device"], rtol=1e-5, atol=1e-5)


# ---- The subprocess: 8 CPU devices, a 2 (data) x 4 (model) mesh. ----


def cross_entropy(model, params, batch):
  """Mean token-level cross-entropy over the non-padding targets."""
  from prompt_tuning_jax.models.t5 import shift_right
  targets = batch["targets"]
  logits = model.apply({"params": params}, batch["inputs"], shift_right(targets), enable_dropout=False)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  token_log_probs = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  weights = (targets > 0).astype(jnp.float32)
  return -jnp.sum(token_log_probs * weights) / jnp.sum(weights)


def main(scan_layers: bool) -> None:
  from prompt_tuning_jax.models import t5_config
  from prompt_tuning_jax.models.t5 import T5
  assert jax.device_count() == 8, jax.devices()
  # num_heads=6 as in t5_1_1_small: joined_kv=96 splits over 4 devices, the relpos heads (6) do not.
  config = t5_config.preset("t5_1_1_small", vocab_size=256, embed_dim=64, num_heads=6, head_dim=16,
                            mlp_dim=128, num_encoder_layers=2, num_decoder_layers=2, scan_layers=scan_layers)
  rng = np.random.default_rng(0)
  inputs = rng.integers(1, 256, (8, 24)).astype(np.int32)
  targets = rng.integers(1, 256, (8, 10)).astype(np.int32)
  for i, (n, m) in enumerate(zip(rng.integers(4, 24, 8), rng.integers(2, 10, 8))):
    inputs[i, n:], targets[i, m:] = 0, 0
  batch = {"inputs": inputs, "targets": targets}

  model = T5(config)
  device = jax.devices()[0]  # The default device: init and the reference loss run on it alone.
  boxed_params = model.init(jax.random.key(0), inputs[:1], targets[:1])["params"]
  loss_fn = jax.jit(lambda params, batch: cross_entropy(model, params, batch))
  single = loss_fn(jax.device_put(nn.meta.unbox(boxed_params), device), jax.device_put(batch, device))

  mesh = partitioning.create_mesh(num_partitions=4)
  assert dict(mesh.shape) == {"data": 2, "model": 4}
  params = partitioning.shard_params(boxed_params, mesh)
  sharded_batch = partitioning.shard_batch(batch, mesh)
  sharded = loss_fn(params, sharded_batch)

  flat = {jax.tree_util.keystr(path, simple=True, separator="/"): x
          for path, x in jax.tree_util.tree_leaves_with_path(params)}
  split = {name: x for name, x in flat.items() if "model" in x.sharding.spec}
  assert any("mlp/wi_0/kernel" in name for name in split) and any("query/kernel" in name for name in split)
  for name, x in split.items():
    dim = list(x.sharding.spec).index("model")
    assert x.addressable_shards[0].data.shape[dim] == x.shape[dim] // 4, name
  relpos = [x for name, x in flat.items() if name.endswith("rel_embedding")]
  assert relpos and all(x.sharding.is_fully_replicated for x in relpos)
  for x in sharded_batch.values():
    assert x.sharding.spec == P("data") and x.addressable_shards[0].data.shape[0] == 4
  try:
    partitioning.shard_batch({"inputs": inputs[:3]}, mesh)
    raise AssertionError("a batch of 3 on a data axis of 2 must raise")
  except ValueError as error:
    assert "3" in str(error) and "2" in str(error), error
  print(f"{len(split)}/{len(flat)} parameters split over 'model'; scan_layers={scan_layers}")
  print(json.dumps({"single_device": float(single), "sharded": float(sharded)}))


if __name__ == "__main__":
  main(scan_layers="--scan_layers" in sys.argv[1:])
