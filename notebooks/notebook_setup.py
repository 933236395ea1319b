"""What the notebooks share: the TINY switch, the setting of their runs, where runs and figures go.

Environment (read when a notebook starts):
  PTJ_NOTEBOOK_TINY      '1' (default): a tiny setting that runs top to bottom on a CPU in well under a minute
                         (a seeded random tiny BERT, a few steps; plumbing only, the numbers mean nothing).
                         '0': the real sweep on the real MiniLM (or all T5 sizes), figures saved as PNGs.
  PTJ_NOTEBOOK_SETTING   the experiments/config.py setting of a non-tiny run ('cpu' by default, 'full').
  PTJ_NOTEBOOK_OUT       where runs go (default: a temporary folder when tiny, else runs/notebooks/<setting>);
                         runs that finished there are reused (experiments/training.py), so a re-run is cheap.
  PTJ_NOTEBOOK_TASKS     comma-separated tasks replacing a non-tiny setting's tasks and ensemble_tasks (and the
                         notebook's own default tasks); the tiny setting ignores it.
  PTJ_NOTEBOOK_SEEDS     comma-separated seeds replacing a non-tiny setting's seeds.
"""
import dataclasses
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from prompt_tuning_jax.experiments import config  # pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = os.environ.get("PTJ_NOTEBOOK_TINY", "1") == "1"
SETTING_NAME = os.environ.get("PTJ_NOTEBOOK_SETTING", "cpu")
FIGURES = os.path.join(REPO, "docs", "figures")  # shown in docs/RESULTS.md
TINY_BERT = ("bert_config.preset.embed_dim = 32", "bert_config.preset.num_heads = 4",
             "bert_config.preset.head_dim = 8", "bert_config.preset.mlp_dim = 64", "bert_config.preset.num_layers = 2")


def out_dir() -> str:
  if os.environ.get("PTJ_NOTEBOOK_OUT"):
    return os.environ["PTJ_NOTEBOOK_OUT"]
  return tempfile.mkdtemp(prefix="ptj_notebook_") if TINY else os.path.join(REPO, "runs", "notebooks", SETTING_NAME)


def setting(**fields) -> config.Setting:
  """The setting of this notebook: tiny (CB, a random tiny BERT, 2 steps) or SETTING_NAME, then `fields`.

  `fields` are the notebook's own defaults; a non-tiny run's PTJ_NOTEBOOK_TASKS / PTJ_NOTEBOOK_SEEDS replace
  their tasks / seeds.
  """
  if TINY:
    base = dataclasses.replace(config.SETTINGS["smoke"], tasks=("bert_super_glue_cb",), train_steps=2,
                               eval_max_examples=32, backbone_bindings=TINY_BERT, use_minilm=False)
    return dataclasses.replace(base, **fields)
  base = dataclasses.replace(config.SETTINGS[SETTING_NAME], **fields)
  if os.environ.get("PTJ_NOTEBOOK_TASKS"):
    tasks = tuple(os.environ["PTJ_NOTEBOOK_TASKS"].split(","))
    unknown = [t for t in tasks if t not in config.TASKS]
    if unknown:
      raise ValueError(f"PTJ_NOTEBOOK_TASKS: unknown tasks {unknown}; known: {list(config.TASKS)}")
    base = dataclasses.replace(base, tasks=tasks, ensemble_tasks=tasks)
  if os.environ.get("PTJ_NOTEBOOK_SEEDS"):
    try:
      seeds = tuple(int(seed) for seed in os.environ["PTJ_NOTEBOOK_SEEDS"].split(","))
    except ValueError:
      raise ValueError(f"PTJ_NOTEBOOK_SEEDS: {os.environ['PTJ_NOTEBOOK_SEEDS']!r} is not a comma-separated list "
                       "of integers") from None
    base = dataclasses.replace(base, seeds=seeds)
  return base


def save_figure(fig, name: str) -> None:
  """Saves `fig` as docs/figures/<name>.png unless TINY (tiny figures are only shown)."""
  if TINY:
    print(f"TINY: {name}.png not saved (set PTJ_NOTEBOOK_TINY=0 for the real figure)")
    return
  os.makedirs(FIGURES, exist_ok=True)
  path = os.path.join(FIGURES, f"{name}.png")
  fig.savefig(path, dpi=120, bbox_inches="tight")
  print(f"saved {path}")
