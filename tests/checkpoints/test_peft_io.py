"""PEFT-only orbax checkpoints: round trip, retention (last N + best K), corrupted-step fallback."""
import glob
import logging
import os

import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax.checkpoints.peft_io import PeftCheckpointManager


def state(value: float):
  return {"trainable": {"prompt": jnp.full((3, 4), value)}, "opt_state": {"count": jnp.array(int(value))}}


def test_round_trip_and_metadata(tmp_path):
  manager = PeftCheckpointManager(str(tmp_path))
  manager.save(5, state(5.0), {"data_position": 40, "model": "t5"})
  restored, meta = manager.restore_latest(state(0.0))
  np.testing.assert_array_equal(restored["trainable"]["prompt"], np.full((3, 4), 5.0))
  assert int(restored["opt_state"]["count"]) == 5
  assert meta["data_position"] == 40 and meta["step"] == 5 and meta["model"] == "t5"


def test_nothing_to_restore(tmp_path):
  assert PeftCheckpointManager(str(tmp_path)).restore_latest(state(0.0)) is None


def test_keeps_last_n_and_best_k(tmp_path):
  manager = PeftCheckpointManager(str(tmp_path), keep_last=2, keep_best=1, best_metric="accuracy")
  for step, accuracy in [(1, 0.5), (2, 0.9), (3, 0.6), (4, 0.7), (5, 0.65)]:
    manager.save(step, state(float(step)), {}, metrics={"accuracy": accuracy})
  assert manager.steps() == [2, 4, 5]
  assert manager.best_step() == 2
  manager.update_metrics(5, {"accuracy": 0.95})
  assert manager.best_step() == 5
  manager.save(6, state(6.0), {})
  assert manager.steps() == [5, 6]


def test_corrupted_latest_falls_back_to_previous(tmp_path, caplog):
  manager = PeftCheckpointManager(str(tmp_path), keep_last=3)
  manager.save(1, state(1.0), {})
  manager.save(2, state(2.0), {})
  for path in glob.glob(os.path.join(str(tmp_path), "2", "state", "**", "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "r+b") as f:
        f.truncate(max(0, os.path.getsize(path) // 3))
  with caplog.at_level(logging.WARNING):
    restored, meta = PeftCheckpointManager(str(tmp_path), keep_last=3).restore_latest(state(0.0))
  assert meta["step"] == 1
  np.testing.assert_array_equal(restored["trainable"]["prompt"], np.full((3, 4), 1.0))
  assert "step 2" in caplog.text and "unreadable" in caplog.text
