"""t5x checkpoint layout: round trips, the on-disk layout itself, a hand-built t5x-style file, errors."""
import os
import shutil

import ml_dtypes
import numpy as np
import pytest
import tensorstore as ts
from flax import serialization

from prompt_tuning_jax.checkpoints.t5x import load_t5x_checkpoint, read_t5x_step, save_t5x_checkpoint
from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params

EMBED, HEADS, HEAD_DIM, MLP, VOCAB, BUCKETS = 32, 2, 4, 16, 24, 4


def _t5x_params() -> dict:
  """Small T5 1.1 params with t5x names; one bfloat16 array and one tiny (inline) array."""
  rng = np.random.default_rng(0)
  shapes = {"token_embedder/embedding": (VOCAB, EMBED),
            "encoder/relpos_bias/rel_embedding": (HEADS, BUCKETS),  # 8 elements: stored inline.
            "encoder/encoder_norm/scale": (EMBED,),
            "decoder/decoder_norm/scale": (EMBED,),
            "decoder/logits_dense/kernel": (EMBED, VOCAB)}
  for stack, attentions in (("encoder", ("attention",)), ("decoder", ("self_attention", "encoder_decoder_attention"))):
    for attention in attentions:
      for projection in ("query", "key", "value"):
        shapes[f"{stack}/layers_0/{attention}/{projection}/kernel"] = (EMBED, HEADS * HEAD_DIM)
      shapes[f"{stack}/layers_0/{attention}/out/kernel"] = (HEADS * HEAD_DIM, EMBED)
    shapes[f"{stack}/layers_0/mlp/wi_0/kernel"] = (EMBED, MLP)
    shapes[f"{stack}/layers_0/mlp/wi_1/kernel"] = (EMBED, MLP)
    shapes[f"{stack}/layers_0/mlp/wo/kernel"] = (MLP, EMBED)
  flat = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
  flat["decoder/logits_dense/kernel"] = flat["decoder/logits_dense/kernel"].astype(ml_dtypes.bfloat16)
  return unflatten_params(flat)


def _assert_equal_trees(actual: dict, expected: dict) -> None:
  actual, expected = flatten_params(actual), flatten_params(expected)
  assert sorted(actual) == sorted(expected)
  for name, value in expected.items():
    assert actual[name].dtype == np.float32, name
    np.testing.assert_array_equal(actual[name], value.astype(np.float32), err_msg=name)


def test_round_trip_from_every_path_form(tmp_path):
  params = _t5x_params()
  checkpoint_dir = save_t5x_checkpoint(params, str(tmp_path), step=1100)
  assert checkpoint_dir == str(tmp_path / "checkpoint_1100")
  for path in (tmp_path, tmp_path / "checkpoint_1100", tmp_path / "checkpoint_1100" / "checkpoint"):
    _assert_equal_trees(load_t5x_checkpoint(str(path)), params)
    assert read_t5x_step(str(path)) == 1100
  assert os.listdir(tmp_path) == ["checkpoint_1100"]  # The temporary directory was renamed, none is left.


def test_bfloat16_stays_bfloat16_without_cast(tmp_path):
  params = flatten_params(_t5x_params())
  params["encoder/encoder_norm/scale"] = np.float32([1.0 + 2**-10] * EMBED)  # Not representable in bfloat16.
  as_bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in params.items()}
  save_t5x_checkpoint(unflatten_params(as_bf16), str(tmp_path))
  loaded = flatten_params(load_t5x_checkpoint(str(tmp_path), dtype=None))
  assert {v.dtype for v in loaded.values()} == {np.dtype(ml_dtypes.bfloat16)}
  for name, value in as_bf16.items():
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)
  assert loaded["encoder/encoder_norm/scale"][0] == 1.0  # The bfloat16-rounded value, not the float32 one.


def test_layout_is_t5x(tmp_path):
  checkpoint_dir = save_t5x_checkpoint(_t5x_params(), str(tmp_path), step=7)
  with open(os.path.join(checkpoint_dir, "checkpoint"), "rb") as f:
    contents = serialization.msgpack_restore(f.read())
  assert contents["version"] == 3 and int(contents["optimizer"]["state"]["step"]) == 7
  target = contents["optimizer"]["target"]
  spec = target["decoder"]["logits_dense"]["kernel"]
  assert spec["driver"] == "zarr" and spec["dtype"] == "bfloat16"
  assert spec["kvstore"]["driver"] == "file"
  assert spec["kvstore"]["path"].rstrip("/") == "target.decoder.logits_dense.kernel"  # Relative to the dir.
  assert spec["metadata"]["compressor"]["id"] == "gzip" and spec["metadata"]["shape"] == [EMBED, VOCAB]
  assert isinstance(target["encoder"]["relpos_bias"]["rel_embedding"], np.ndarray)  # Inline.
  array_dirs = {name for name in os.listdir(checkpoint_dir) if name != "checkpoint"}
  assert "target.encoder.layers_0.attention.query.kernel" in array_dirs
  assert "target.token_embedder.embedding" in array_dirs
  assert "target.encoder.relpos_bias.rel_embedding" not in array_dirs
  assert len(array_dirs) == len(flatten_params(_t5x_params())) - 1  # Only rel_embedding is tiny enough.
  assert os.path.isfile(os.path.join(checkpoint_dir, "target.token_embedder.embedding", ".zarray"))


def test_reads_a_checkpoint_written_the_way_t5x_writes_to_gcs(tmp_path):
  """Built by hand: gcs kvstore with t5x's dummy bucket, several chunks, Adafactor state, other steps around."""
  checkpoint_dir = tmp_path / "checkpoint_1000000"
  os.makedirs(checkpoint_dir)
  os.makedirs(tmp_path / "checkpoint_999000.tmp-1234")  # An unfinished save is not a checkpoint.
  kernel = np.arange(6 * 10, dtype=np.float32).reshape(6, 10).astype(ml_dtypes.bfloat16)
  metadata = {"chunks": [3, 5], "compressor": {"id": "gzip"}, "shape": [6, 10]}
  ts.open({"driver": "zarr", "dtype": "bfloat16", "metadata": metadata,
           "kvstore": {"driver": "file", "path": str(checkpoint_dir / "target.encoder.layers_0.mlp.wo.kernel")}},
          create=True).result().write(kernel).result()
  gcs_kvstore = {"driver": "gcs", "bucket": "t5x-dummy-bucket", "path": "target.encoder.layers_0.mlp.wo.kernel"}
  gcs_spec = {"driver": "zarr", "dtype": "bfloat16", "metadata": metadata, "kvstore": gcs_kvstore}
  contents = {"version": 3, "optimizer": {
      "target": {"encoder": {"layers_0": {"mlp": {"wo": {"kernel": gcs_spec}}}}, "decoder": {"scale": np.ones(3)}},
      "state": {"step": np.int32(1_000_000), "param_states": {"decoder": {"scale": {"v": np.zeros(3)}}}}}}
  with open(checkpoint_dir / "checkpoint", "wb") as f:
    f.write(serialization.msgpack_serialize(contents))
  params = load_t5x_checkpoint(str(tmp_path))
  np.testing.assert_array_equal(params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"], kernel.astype(np.float32))
  np.testing.assert_array_equal(params["decoder"]["scale"], np.ones(3, np.float32))
  assert read_t5x_step(str(tmp_path)) == 1_000_000


def test_highest_step_is_picked(tmp_path):
  params = _t5x_params()
  save_t5x_checkpoint(params, str(tmp_path), step=20)
  later = {k: v + 1 for k, v in flatten_params(params).items()}
  save_t5x_checkpoint(unflatten_params(later), str(tmp_path), step=100)
  assert read_t5x_step(str(tmp_path)) == 100
  _assert_equal_trees(load_t5x_checkpoint(str(tmp_path)), unflatten_params(later))
  with pytest.raises(FileExistsError, match="checkpoint_20"):
    save_t5x_checkpoint(params, str(tmp_path), step=20)


def test_missing_path_and_empty_dir_name_the_path(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match=f"No t5x checkpoint at {missing}: the path does not exist"):
    load_t5x_checkpoint(missing)
  with pytest.raises(FileNotFoundError, match=f"No t5x checkpoint at {tmp_path}: neither"):
    read_t5x_step(str(tmp_path))


def test_deleted_array_names_parameter_and_file(tmp_path):
  checkpoint_dir = save_t5x_checkpoint(_t5x_params(), str(tmp_path), step=3)
  shutil.rmtree(os.path.join(checkpoint_dir, "target.encoder.layers_0.mlp.wi_1.kernel"))
  with pytest.raises(FileNotFoundError) as error:
    load_t5x_checkpoint(checkpoint_dir)
  message = str(error.value)
  assert "encoder/layers_0/mlp/wi_1/kernel" in message
  assert os.path.join(checkpoint_dir, "checkpoint") in message
  assert "\n" not in message


def test_not_a_msgpack_file_is_one_clear_error(tmp_path):
  bad = tmp_path / "checkpoint"
  bad.write_bytes(b"model_checkpoint_path: 'model.ckpt-1000000'\n")
  with pytest.raises(ValueError, match="TensorFlow checkpoint index"):
    load_t5x_checkpoint(str(bad))
  bad.write_bytes(b"\xc1 not msgpack")
  with pytest.raises(ValueError, match=f"{bad} is not a t5x msgpack checkpoint"):
    load_t5x_checkpoint(str(bad))
