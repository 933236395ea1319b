"""Every notebook in notebooks/ runs top to bottom in its tiny setting, and is committed without outputs.

The kernel is this interpreter (the venv's python): a kernelspec written to a temporary JUPYTER_PATH, so nothing is
installed into the user's Jupyter directories.
"""
import json
import os
import re
import subprocess
import sys

import nbclient
import nbformat
import pytest

from prompt_tuning_jax.experiments import config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK_DIR = os.path.join(REPO, "notebooks")
NOTEBOOKS = sorted(name for name in os.listdir(NOTEBOOK_DIR) if name.endswith(".ipynb"))
EXPECTED = {"scale_ablation.ipynb", "prompt_length_init.ipynb", "ensembling.ipynb"}


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
  """JUPYTER_PATH with a 'python3' kernelspec whose argv is sys.executable; tiny notebook settings."""
  root = tmp_path_factory.mktemp("jupyter")
  spec_dir = root / "kernels" / "python3"
  spec_dir.mkdir(parents=True)
  spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
          "display_name": "Python 3 (test venv)", "language": "python"}
  (spec_dir / "kernel.json").write_text(json.dumps(spec))
  saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "PTJ_NOTEBOOK_TINY", "PTJ_NOTEBOOK_OUT")}
  os.environ.update(JUPYTER_PATH=str(root), PTJ_NOTEBOOK_TINY="1")
  os.environ.pop("PTJ_NOTEBOOK_OUT", None)
  yield str(root)
  for key, value in saved.items():
    if value is None:
      os.environ.pop(key, None)
    else:
      os.environ[key] = value


def test_the_three_notebooks_exist():
  assert EXPECTED <= set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
  notebook = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
  for cell in notebook.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, f"{name}: clear the outputs before committing"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_runs_top_to_bottom_in_the_tiny_setting(name, kernel_env, tmp_path, monkeypatch):
  from jupyter_client.kernelspec import KernelSpecManager  # pylint: disable=g-import-not-at-top
  assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
  if name == "scale_ablation.ipynb":  # a real (tiny-shaped) benchmark run feeds its step-time / memory section
    subprocess.run([sys.executable, "-m", "prompt_tuning_jax.bench", "--models=t5_1_1_small",
                    "--methods=prompt_tuning,lora", "--batch=2", "--input_length=32", "--target_length=4",
                    "--steps=1", "--warmup=1", "--no_peft", "--no_flop_ratio", f"--out_dir={tmp_path}"],
                   check=True, cwd=REPO, capture_output=True)
    monkeypatch.setenv("PTJ_BENCH_JSON", str(tmp_path / "bench.json"))
  notebook = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
  client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                                   resources={"metadata": {"path": NOTEBOOK_DIR}})
  client.execute()
  text = "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
  assert "TINY=True" in text
  if name == "scale_ablation.ipynb":
    assert re.search(r"t5_1_1_small +prompt_tuning +2 x 32 ", text), text
    assert "scale_step_time_memory.png not saved" in text  # the plot cell ran


def test_a_real_setting_takes_its_tasks_and_seeds_from_the_environment(monkeypatch):
  monkeypatch.syspath_prepend(NOTEBOOK_DIR)
  import notebook_setup  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(notebook_setup, "TINY", False)
  monkeypatch.delenv("PTJ_NOTEBOOK_TASKS", raising=False)
  assert notebook_setup.setting(tasks=("bert_glue_sst2",)).tasks == ("bert_glue_sst2",)  # the notebook's default
  monkeypatch.setenv("PTJ_NOTEBOOK_TASKS", "bert_super_glue_cb,bert_glue_rte")
  chosen = notebook_setup.setting(tasks=("bert_glue_sst2",))
  assert chosen.tasks == chosen.ensemble_tasks == ("bert_super_glue_cb", "bert_glue_rte")
  assert chosen.ensemble_prompts == 5 and chosen.train_steps == "cpu"  # the rest is the cpu setting's
  rte = config.TASKS["bert_glue_rte"]
  assert chosen.steps("bert_glue_rte") == rte.cpu_steps != rte.train_steps  # the cpu setting's, not the full one's
  monkeypatch.setenv("PTJ_NOTEBOOK_SEEDS", "0,1,2")
  assert notebook_setup.setting().seeds == (0, 1, 2)
  monkeypatch.setenv("PTJ_NOTEBOOK_SEEDS", "0,one")
  with pytest.raises(ValueError, match="PTJ_NOTEBOOK_SEEDS: '0,one' is not a comma-separated list of integers"):
    notebook_setup.setting()
  monkeypatch.delenv("PTJ_NOTEBOOK_SEEDS")
  monkeypatch.setenv("PTJ_NOTEBOOK_TASKS", "bert_glue_sst3")
  with pytest.raises(ValueError, match="PTJ_NOTEBOOK_TASKS: unknown tasks \\['bert_glue_sst3'\\]"):
    notebook_setup.setting()
