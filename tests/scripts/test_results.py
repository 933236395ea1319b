"""scripts/results.py end to end in its smoke setting (real MiniLM, CB from the data dir, a few steps).

The outputs are checked against the run directories, not against numbers: each run's metric is its evaluator's
eval/metrics.json, its trainable count is the size of what its checkpoint holds, its step time the median of its
metrics.jsonl, the markdown shows those values, a second invocation trains nothing; the ensemble report's
per-prompt metrics are each prompt run's own evaluation, its mean / best follow from them, and the frozen head
the prompts share is the head run's trained classifier.
"""
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys

import numpy as np
import pytest

from prompt_tuning_jax.checkpoints import hf_bert
from prompt_tuning_jax.checkpoints.peft_io import PeftCheckpointManager
from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.experiments import config, report, results, training

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "results.py")


def run_script(*args: str) -> str:
  process = subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert process.returncode == 0, process.stderr[-3000:]
  return process.stdout


def read(path: str):
  with open(path) as f:
    return json.load(f)


def checkpoint_leaves(model_dir: str) -> dict[str, np.ndarray]:
  trained, _ = PeftCheckpointManager(os.path.join(model_dir, "checkpoints")).restore_trainable("latest")
  return {k: np.asarray(v) for k, v in flatten_params(trained).items()}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  out_dir = str(tmp_path_factory.mktemp("results_smoke"))
  return out_dir, run_script("--setting=smoke", f"--out_dir={out_dir}")


@pytest.mark.slow
def test_smoke_outputs_match_the_run_directories(smoke):
  out_dir, stdout = smoke
  setting = config.SETTINGS["smoke"]
  payload = read(os.path.join(out_dir, "results.json"))
  assert payload["setting"]["name"] == "smoke"
  assert {(r["task"], r["method"], r["seed"]) for r in payload["runs"]} == {
      (t, m, s) for t in setting.tasks for m in setting.methods for s in setting.seeds}
  table = open(os.path.join(out_dir, "results.md")).read()
  assert table in stdout
  for run in payload["runs"]:
    model_dir = os.path.join(out_dir, run["model_dir"])
    evaluated = read(os.path.join(model_dir, "eval", "metrics.json"))
    assert run["metrics"] == evaluated
    leaves = checkpoint_leaves(model_dir)
    assert run["trainable_parameters"] == sum(v.size for v in leaves.values())
    assert math.isclose(run["trainable_percent"], 100 * run["trainable_parameters"] / run["total_parameters"])
    rows = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
    times = [run["batch_size"] / r["examples_per_second"] for r in rows if r["split"] == "train"]
    assert len(times) == run["train_steps"]
    assert math.isclose(run["step_seconds"], statistics.median(times[2:] or times[-1:]))
    label = config.METHODS[run["method"]].label
    row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
    shown = [f"{evaluated[m]:.2f}" for m in config.TASKS[run["task"]].metrics]
    assert " / ".join(shown) in row and f"{run['trainable_parameters']:,}" in row
  assert "--setting=smoke" in open(os.path.join(out_dir, "command.txt")).read()


@pytest.mark.slow
def test_smoke_rerun_skips_every_finished_run(smoke):
  out_dir, _ = smoke
  before = read(os.path.join(out_dir, "results.json"))["runs"]
  stdout = run_script("--setting=smoke", f"--out_dir={out_dir}")
  assert stdout.count("skip ") == len(before) and "run  " not in stdout
  assert read(os.path.join(out_dir, "results.json"))["runs"] == before


@pytest.mark.slow
def test_report_only_tabulates_finished_runs_and_trains_nothing(smoke, tmp_path):
  out_dir = str(tmp_path / "copy")
  shutil.copytree(smoke[0], out_dir)
  bitfit = read(os.path.join(out_dir, "bert_super_glue_cb", "bitfit", "seed_0", "result.json"))
  doc = tmp_path / "RESULTS.md"
  doc.write_text("# Results\n\n<!-- results:table -->\nold table\n<!-- /results:table -->\n\nprose stays\n")
  stdout = run_script("--setting=smoke", "--report_only", "--methods=bitfit,full_finetuning", f"--out_dir={out_dir}",
                      f"--into={doc}")
  assert "report only: 1 of 2 runs finished" in stdout and "run  " not in stdout
  assert not os.path.exists(os.path.join(out_dir, "bert_super_glue_cb", "full_finetuning"))
  assert read(os.path.join(out_dir, "results.json"))["runs"] == [bitfit]
  table = open(os.path.join(out_dir, "results.md")).read()
  assert "| BitFit |" in table and "full fine-tuning" not in table
  rows = [line for line in table.splitlines() if line.startswith("|")]  # results.md's method table
  assert doc.read_text() == ("# Results\n\n<!-- results:table -->\n" + "".join(r + "\n" for r in rows)
                             + "<!-- /results:table -->\n\nprose stays\n")


def test_splice_replaces_the_marked_blocks_and_keeps_the_rest():
  parts = {"table": ["| a |", "|---|"], "wall": ["- in all: 1 run, 0.10 h"], "targets": ["- unmarked, unused"]}
  doc = ("intro\n<!-- results:table -->\nstale\nrows\n<!-- /results:table -->\nmiddle\n"
         "<!-- results:wall -->\n<!-- /results:wall -->\nend\n")
  once = report.splice(doc, parts, "RESULTS.md")
  assert once == ("intro\n<!-- results:table -->\n| a |\n|---|\n<!-- /results:table -->\nmiddle\n"
                  "<!-- results:wall -->\n- in all: 1 run, 0.10 h\n<!-- /results:wall -->\nend\n")
  assert report.splice(once, parts, "RESULTS.md") == once  # a refresh rewrites only the blocks
  with pytest.raises(ValueError, match=r"RESULTS.md: '<!-- results:table -->' has no '<!-- /results:table -->'"):
    report.splice("<!-- results:table -->\nrows\n", parts, "RESULTS.md")
  with pytest.raises(ValueError, match=r"notes.md: no '<!-- results:NAME -->' marker"):
    report.splice("no markers\n", parts, "notes.md")
  two = once.replace("end\n", "<!-- rerun:table -->\n<!-- /rerun:table -->\nend\n")
  rerun = report.splice(two, {"table": ["| b |"]}, "RESULTS.md", marker="rerun")
  assert rerun == once.replace("end\n", "<!-- rerun:table -->\n| b |\n<!-- /rerun:table -->\nend\n")
  with pytest.raises(ValueError, match=r"marker 'x -->': lower-case"):
    report.splice(two, parts, "RESULTS.md", marker="x -->")


def test_markdown_is_the_blocks_under_their_headings():
  setting = config.Setting(tasks=("bert_glue_sst2",), methods=("bitfit", "lora"), seeds=(0,), train_steps="cpu",
                           batch_size=32, max_length=8)
  shared = {"trainable_parameters": 10, "trainable_percent": 1.0, "train_steps": 500, "batch_size": 32,
            "wall_seconds": 60.0, "step_seconds": 0.2, "train_accuracy_fifths": [60.0, 70.0, 75.0, 80.0, 81.0]}
  runs = [{**fake_run("bert_glue_sst2", m, 0, v), **shared} for m, v in (("bitfit", 80.0), ("lora", 84.0))]
  parts, text = report.blocks(setting, runs), report.markdown("cmd", "cpu", setting, runs)
  assert parts["table"][2].startswith("| BitFit | 10 (1.000%) | 80.00 |") and len(parts["table"]) == 4
  for name in ("table", "targets", "plateau", "wall"):
    assert parts[name] and "\n".join(parts[name]) in text, name


def test_mean_std_format():
  assert report.mean_std([80.0]) == "80.00"
  assert report.mean_std([80.0, 82.0]) == f"81.00 ± {statistics.stdev([80.0, 82.0]):.2f}"


def fake_run(task: str, method: str, seed: int, value: float, num_examples: int = 872) -> dict:
  return {"task": task, "method": method, "seed": seed,
          "metrics": {config.TASKS[task].metrics[0]: value, "num_examples": num_examples}}


def test_sweep_plan_covers_each_swept_rate_and_borrowed_rates_name_a_swept_method():
  plan = results.make_plan(results.setting_from("sweep"), sweep=True)
  swept = {m: v.sweep for m, v in config.METHODS.items() if v.sweep}
  assert sorted((run.method, run.learning_rate) for run in plan) == sorted(
      (m, lr) for m, rates in swept.items() for lr in rates)
  for name, method in config.METHODS.items():
    assert bool(method.sweep) != bool(method.sweep_from), name  # its own sweep, or another's
    if method.sweep_from:
      lender = config.METHODS[method.sweep_from]
      assert lender.sweep and lender.sweep_macro == method.sweep_macro, name



def test_flags_cut_the_setting_and_the_head_plan():
  setting = results.setting_from("cpu", tasks="bert_glue_rte", seeds="0,1", train_steps=7, ensembles=True)
  assert setting.tasks == setting.ensemble_tasks == ("bert_glue_rte",) and setting.seeds == (0, 1)
  assert setting.steps("bert_glue_rte") == 7 and setting.methods == config.SETTINGS["cpu"].methods
  assert results.setting_from("cpu", tasks="bert_glue_rte").ensemble_tasks == config.SETTINGS["cpu"].ensemble_tasks
  with pytest.raises(SystemExit, match=r"unknown methods \['nope'\]"):
    results.setting_from("smoke", methods="nope")
  plan = results.make_plan(config.SETTINGS["sweep"], heads=True, variants="cls")
  assert [(run.method, run.variant) for run in plan] == [(m, "cls") for m in config.HEAD_METHODS]
  assert plan[0].directory == os.path.join("bert_glue_sst2", config.HEAD_METHODS[0], "head_cls", "seed_0")

def test_seed_values_show_each_seed():
  assert report.seed_values([80.0]) == "80.00"
  assert report.seed_values([80.0, 82.0, 81.0]) == "81.00 ± 1.00 [80.0, 82.0, 81.0]"


def test_orderings_and_targets_are_judged_on_the_seed_means():
  sst2, cb = "bert_glue_sst2", "bert_super_glue_cb"
  setting = config.Setting(tasks=(sst2, cb), methods=tuple(config.METHODS), seeds=(0, 1, 2), train_steps=1,
                           batch_size=1, max_length=8)
  runs = [fake_run(sst2, "parallel_adapter", s, v) for s, v in enumerate([86.0, 87.0, 88.0])]
  runs += [fake_run(sst2, "sequential_adapter", s, v) for s, v in enumerate([85.0, 85.5, 86.0])]  # gap +1.5
  runs += [fake_run(cb, "parallel_adapter", s, v) for s, v in enumerate([70.0, 70.0, 70.0])]
  runs += [fake_run(cb, "sequential_adapter", s, v) for s, v in enumerate([60.0, 80.0, 73.0])]  # gap -1, std 10
  runs += [fake_run(sst2, "pasta", 0, 84.0), fake_run(sst2, "full_finetuning", 0, 85.5)]  # within 2 points
  lines = report.orderings_markdown(setting, runs)
  assert len(lines) == 3
  assert lines[0].startswith("- parallel adapter > sequential adapter") and "SST-2 (n=3)" in lines[0]
  assert lines[0].endswith("gap +1.50: **holds**")
  assert "CB (n=3)" in lines[1] and lines[1].endswith("gap -1.00: **does not hold (gap within one std)**")
  # one seed each: 0.5 points past the margin is inside the binomial s.e. of two accuracies over 872 examples
  se = 100 * (0.84 * 0.16 / 872 + 0.855 * 0.145 / 872) ** 0.5
  assert se == pytest.approx(1.72, abs=0.01)
  assert lines[2].startswith("- PASTA within 2 points")
  assert lines[2].endswith(f"gap -1.50: **holds (gap within one binomial s.e., {se:.2f})**")
  mrpc, boolq = "bert_glue_mrpc", config.BOOLQ
  one_seed = [fake_run(mrpc, "parallel_adapter", 0, 80.0), fake_run(mrpc, "sequential_adapter", 0, 90.0),
              fake_run(boolq, "fl_tuning", 0, 70.0, 2000), fake_run(boolq, "prompt_tuning_random", 0, 62.0, 2000)]
  lines = report.orderings_markdown(dataclasses.replace(setting, tasks=(mrpc, boolq)), one_seed)
  assert lines[0].endswith("gap -10.00: **does not hold (one seed, no spread measured)**")  # F1: no binomial
  assert lines[1].endswith("gap +8.00: **holds**")  # 8 points > the s.e. of 70% and 62% over 2000 (~1.5)
  # while the table fills in, one side may have three seeds and the other one: the std rule, not the binomial one
  mixed = runs[:3] + [fake_run(sst2, "sequential_adapter", 0, 86.5)]  # gap +0.50 < std 1.00 (the s.e. is ~1.6)
  lines = report.orderings_markdown(dataclasses.replace(setting, tasks=(sst2,)), mixed)
  assert lines == [lines[0]] and lines[0].endswith("gap +0.50: **holds (gap within one std)**")
  targets = report.targets_markdown(setting, runs + [fake_run(sst2, "bitfit", 0, 60.0)])
  assert "- full fine-tuning on SST-2 >= 66.0: 85.50 **met**" in targets
  assert "- BitFit on SST-2 >= 66.0: 60.00 **missed**" in targets
  assert targets[-1] == "- full fine-tuning on SST-2 >= 85.0: 85.50 **met**"


def test_train_accuracy_fifths_and_the_plateau_table(tmp_path):
  metrics = tmp_path / "metrics.jsonl"
  rows = [{"split": "train", "step": i + 1, "accuracy": 0.5 if i < 8 else 1.0, "examples_per_second": 2.0}
          for i in range(10)]
  rows.insert(3, {"split": "eval", "step": 3, "accuracy": 0.0})  # eval rows are not train batches
  metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert training.train_accuracy_fifths(training.train_rows(str(metrics))) == [50.0, 50.0, 50.0, 50.0, 100.0]
  restarted = [{"split": "train", "step": i + 1, "accuracy": 0.0, "examples_per_second": 1.0}
               for i in range(6)] + rows  # a first attempt, stopped before a checkpoint, then the run again
  metrics.write_text("".join(json.dumps(r) + "\n" for r in restarted))
  assert [r["step"] for r in training.train_rows(str(metrics))] == list(range(1, 11))
  assert training.train_accuracy_fifths(training.train_rows(str(metrics))) == [50.0, 50.0, 50.0, 50.0, 100.0]
  (tmp_path / "result.json").write_text(json.dumps({"batch_size": 4, "train_accuracy_fifths": [0.0] * 5}))
  result = training.read_result(str(tmp_path))  # a result.json written before train_rows kept one row per step
  assert result["train_accuracy_fifths"] == [50.0, 50.0, 50.0, 50.0, 100.0] and result["step_seconds"] == 2.0
  metrics.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
  assert training.train_accuracy_fifths(training.train_rows(str(metrics))) == []  # under 5 train steps
  sst2 = "bert_glue_sst2"
  setting = config.Setting(tasks=(sst2, "bert_super_glue_cb"), methods=tuple(config.METHODS), seeds=(0, 1),
                           train_steps=1, batch_size=1, max_length=8)
  runs = [{**fake_run(sst2, "bitfit", s, 80.0), "train_accuracy_fifths": f}
          for s, f in enumerate([[60, 70, 80, 84, 85], [60, 70, 80, 86, 86]])]
  assert report.plateau_markdown(setting, runs) == ["| method | SST-2 |", "|---|---|", "| BitFit | 85.5 (+0.5) |"]
  assert report.plateau_markdown(setting, [fake_run(sst2, "bitfit", 0, 80.0)]) == []


def test_step_time_column_is_the_first_tasks_median():
  sst2, cb = "bert_glue_sst2", "bert_super_glue_cb"
  setting = config.Setting(tasks=(sst2, cb), methods=("bitfit",), seeds=(0, 1, 2), train_steps=1, batch_size=1,
                           max_length=8)
  shared = {"trainable_parameters": 10, "trainable_percent": 1.0, "train_steps": 1, "batch_size": 1,
            "wall_seconds": 1.0}
  runs = [{**fake_run(sst2, "bitfit", s, 80.0), **shared, "step_seconds": t} for s, t in enumerate([0.1, 0.3, 0.2])]
  runs += [{**fake_run(cb, "bitfit", s, 70.0), **shared, "step_seconds": 3.0} for s in range(3)]  # longer inputs
  for run in runs[3:]:
    run["metrics"]["accuracy"] = 80.0
  table = report.markdown("cmd", "cpu", setting, runs).splitlines()
  assert next(line for line in table if line.startswith("| method |")).endswith("| SST-2 step ms (median) |")
  assert next(line for line in table if line.startswith("| BitFit |")).endswith("| 200 |")


def test_cost_sums_each_tasks_wall_time_in_hours():
  sst2, cb = "bert_glue_sst2", "bert_super_glue_cb"
  setting = config.Setting(tasks=(sst2, cb, "bert_glue_rte"), methods=tuple(config.METHODS), seeds=(0,),
                           train_steps="cpu", batch_size=32, max_length=8)
  runs = [{**fake_run(sst2, m, 0, 80.0), "train_steps": 500, "batch_size": 32, "wall_seconds": w}
          for m, w in (("bitfit", 1800.0), ("lora", 3600.0))]
  runs.append({**fake_run(cb, "bitfit", 0, 70.0), "train_steps": 100, "batch_size": 32, "wall_seconds": 900.0})
  assert report.cost_markdown(setting, runs) == [
      "- SST-2: 2 runs of 500 steps x 32, 1.50 h", "- CB: 1 run of 100 steps x 32, 0.25 h",
      "- in all: 3 runs, 1.75 h"]
  assert report.cost_markdown(setting, []) == []


def test_prompt_agreement_counts_examples_and_pairs(tmp_path):
  from prompt_tuning_jax.experiments import prompt_ensembles  # pylint: disable=g-import-not-at-top  (imports jax)
  rows = [{"target": 1, "predictions": [1, 1, 1]},   # all agree, right
          {"target": 0, "predictions": [1, 1, 1]},   # all agree, all wrong
          {"target": 0, "predictions": [0, 1, 1]},   # pairs (0,1), (0,2) differ; prompt 0 right
          {"target": 2, "predictions": [0, 0, 1]}]   # pairs (0,2), (1,2) differ; none right
  path = tmp_path / "predictions.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  agreement = prompt_ensembles.agreement(str(path))
  # pair (0,1) agrees on 3 of 4 rows, (0,2) on 2, (1,2) on 3
  assert agreement == pytest.approx({"all_agree": 50.0, "pairwise": 100 * (3 + 2 + 3) / 12, "any_correct": 50.0})


@pytest.mark.slow
def test_smoke_ensembles_share_the_head_and_match_each_prompt_run(tmp_path):
  out_dir = str(tmp_path)
  stdout = run_script("--setting=smoke", "--ensembles", f"--out_dir={out_dir}")
  (ensemble,) = read(os.path.join(out_dir, "ensembles.json"))["ensembles"]
  k = config.SETTINGS["smoke"].ensemble_prompts
  assert ensemble["num_prompts"] == k == len(ensemble["prompt_runs"])
  metrics = ensemble["metrics"]
  for name in config.TASKS[ensemble["task"]].metrics:
    single = [read(os.path.join(out_dir, p["model_dir"], "eval", "metrics.json"))[name] for p in ensemble["prompt_runs"]]
    assert [metrics[f"prompt_{i}/{name}"] for i in range(k)] == pytest.approx(single)
    assert metrics[f"mean/{name}"] == pytest.approx(np.mean(single))
    assert metrics[f"best/{name}"] == pytest.approx(max(single))
    assert f"{metrics[f'majority_vote/{name}']:.2f}" in stdout
  for prompt_run in ensemble["prompt_runs"]:
    assert set(checkpoint_leaves(os.path.join(out_dir, prompt_run["model_dir"]))) == {"bert/prompt/prompt"}
  head = checkpoint_leaves(os.path.join(out_dir, ensemble["head_run"]["model_dir"]))
  assert {"classifier/kernel", "classifier/bias", "bert/prompt/prompt"} <= set(head)
  _, exported = hf_bert.load_hf_bert(os.path.join(out_dir, "ensembles", ensemble["task"], "head_checkpoint"),
                                     head="sequence_classification")
  for name in ("kernel", "bias"):  # the prompts' frozen head is the head run's trained one
    np.testing.assert_array_equal(np.asarray(exported["classifier"][name]), head[f"classifier/{name}"])


def test_a_run_directory_in_use_by_a_live_process_is_refused(tmp_path):
  model_dir = str(tmp_path / "run")
  with training.claimed(model_dir):
    with pytest.raises(training.RunInUse, match=rf"being trained by process {os.getpid()}"):
      with training.claimed(model_dir):
        pass
  assert not os.path.exists(os.path.join(model_dir, "running.pid"))
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  with open(os.path.join(model_dir, "running.pid"), "w") as f:  # left behind by a killed run
    f.write(dead.stdout.strip())
  with training.claimed(model_dir):
    assert open(os.path.join(model_dir, "running.pid")).read() == str(os.getpid())
  open(os.path.join(model_dir, "running.pid"), "w").close()  # empty: killed between create and write
  with training.claimed(model_dir):
    assert open(os.path.join(model_dir, "running.pid")).read() == str(os.getpid())


@pytest.mark.slow
def test_ledger_records_finished_runs_and_stands_in_for_a_lost_out_dir(smoke, tmp_path):
  out_dir, book = str(tmp_path / "copy"), str(tmp_path / "docs" / "table.jsonl")
  shutil.copytree(smoke[0], out_dir)
  runs = read(os.path.join(out_dir, "results.json"))["runs"]
  lora = os.path.join(out_dir, "bert_super_glue_cb", "lora", "seed_0", "result.json")
  changed = {**read(lora), "gin_bindings": read(lora)["gin_bindings"] + ["LEARNING_RATE = 0.5"]}
  with open(lora, "w") as f:
    json.dump(changed, f)  # trained with another configuration than the plan's now: not recorded
  stdout = run_script("--setting=smoke", "--report_only", f"--out_dir={out_dir}", f"--ledger={book}")
  assert "report only: 3 of 3 runs finished" in stdout and "not recorded in" in stdout
  entries = [json.loads(line) for line in open(book)]
  assert sorted(e["method"] for e in entries) == ["bitfit", "prompt_tuning_random"]
  for entry in entries:
    assert not any(b.startswith("MODEL_DIR") for b in entry["gin_bindings"])
    assert "INITIAL_CHECKPOINT_PATH = 'model'" in entry["gin_bindings"]
    original = next(r for r in runs if r["method"] == entry["method"])
    assert entry["metrics"] == original["metrics"] and entry["wall_seconds"] == original["wall_seconds"]
  # a new machine: no out_dir, only the ledger; the recorded runs are finished and nothing retrains them
  fresh = str(tmp_path / "fresh")
  stdout = run_script("--setting=smoke", "--report_only", f"--out_dir={fresh}", f"--ledger={book}")
  assert "report only: 2 of 3 runs finished" in stdout
  assert [r["metrics"] for r in read(os.path.join(fresh, "results.json"))["runs"]] == [
      r["metrics"] for r in runs if r["method"] != "lora"]
  stdout = run_script("--setting=smoke", "--methods=bitfit,prompt_tuning_random", f"--out_dir={fresh}",
                      f"--ledger={book}")
  assert stdout.count(f"finished ({book})") == 2 and "run  " not in stdout
  assert len(open(book).readlines()) == 2  # nothing appended twice


def test_ledger_keys_follow_the_configuration_and_drop_machine_paths(tmp_path):
  from prompt_tuning_jax.experiments import ledger  # pylint: disable=g-import-not-at-top
  gin_file = tmp_path / "method.gin"
  gin_file.write_text("LEARNING_RATE = 1e-3\n")
  bindings = ["MODEL_DIR = '/machine/a/runs/x'", "INITIAL_CHECKPOINT_PATH = '/venv/site-packages/minilm/model'",
              "TRAIN_STEPS = 10"]
  assert ledger.portable_bindings(bindings) == ["INITIAL_CHECKPOINT_PATH = 'model'", "TRAIN_STEPS = 10"]
  assert ledger.portable_bindings(["INITIAL_CHECKPOINT_PATH = None"]) == ["INITIAL_CHECKPOINT_PATH = None"]
  key = ledger.config_key([str(gin_file)], bindings)
  moved = ["MODEL_DIR = '/machine/b/out'", "INITIAL_CHECKPOINT_PATH = '/other/venv/minilm/model'", "TRAIN_STEPS = 10"]
  assert ledger.config_key([str(gin_file)], moved) == key  # another machine, the same run
  assert ledger.config_key([str(gin_file)], bindings[:2] + ["TRAIN_STEPS = 11"]) != key
  gin_file.write_text("LEARNING_RATE = 3e-3\n")
  assert ledger.config_key([str(gin_file)], bindings) != key  # the method file changed: another run

  path = str(tmp_path / "sub" / "ledger.jsonl")
  book = ledger.Ledger(path)
  assert len(book) == 0 and book.get(key) is None
  result = {"task": "t", "metrics": {"accuracy": 80.0}, "gin_bindings": bindings}
  assert book.add(result, key, "abc123") and not book.add(result, key, "abc123")
  again = ledger.Ledger(path)
  assert len(again) == 1 and again.get(key)["metrics"] == {"accuracy": 80.0}
  assert again.get(key)["code"] == "abc123" and again.get(key)["gin_bindings"] == ledger.portable_bindings(bindings)
  other = ledger.Ledger(path)  # a second process: what it appends is not appended again
  assert other.add({**result, "metrics": {"accuracy": 81.0}}, "k2") and not book.add(result, "k2")
  assert [json.loads(line)["config_key"] for line in open(path)] == [key, "k2"]
  with open(path, "a") as f:
    f.write("not json\n")
  with pytest.raises(ValueError, match=r"ledger.jsonl:3: not a ledger line"):
    ledger.Ledger(path)


@pytest.mark.slow
def test_a_run_another_process_trains_is_left_to_it_and_the_plan_goes_on(smoke, tmp_path):
  out_dir = str(tmp_path / "copy")
  shutil.copytree(smoke[0], out_dir)
  lora = os.path.join(out_dir, "bert_super_glue_cb", "lora", "seed_0")
  os.remove(os.path.join(lora, "result.json"))  # unfinished, and held by a live process (this one)
  setting = config.SETTINGS["smoke"]
  with training.claimed(lora):
    done = results.train_plan(results.make_plan(setting), setting, out_dir)
  assert sorted(r["method"] for r in done) == ["bitfit", "prompt_tuning_random"]
  assert not os.path.exists(os.path.join(lora, "result.json"))  # nothing trained it
