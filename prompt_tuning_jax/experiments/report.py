"""The outputs of scripts/results.py: results.json (every run) and results.md (mean ± std over seeds).

results.json: {'command', 'setting' (name and fields), 'notes', 'runs': [result.json of each run]}.
results.md: one row per method; per task the shown metrics (config.Task.metrics) as mean ± sample std
over seeds with the per-seed values (n = seeds when > 1), trainable parameters and % (of the first task: the head's
size follows the label count, results.json has each), the median step time over the method's runs of the first
task (inputs of another length take another time); then the targets (TARGETS) and the papers' orderings
(ORDERINGS), each with holds / does not hold; then each method's train accuracy over the last fifth of its steps
(how near a plateau) and the runs' summed wall time.
"""
import dataclasses
import re
import statistics
from typing import Any, Optional, Sequence

from prompt_tuning_jax.experiments import config

BOOLQ_NOTE = (f"BoolQ*: the shared data has no BoolQ train split; trained on val.jsonl rows "
              f"[0, {config.BOOLQ_TRAIN_ROWS}) and evaluated on the remaining rows (a val-split task variant, "
              f"prompt_tuning_jax/experiments/task_variants.py), so it is not comparable with published BoolQ dev "
              f"numbers.")


def mean_std(values: Sequence[float]) -> str:
  """'84.21 ± 0.35' (sample std) for several values, '84.21' for one."""
  if len(values) == 1:
    return f"{values[0]:.2f}"
  return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def seed_values(values: Sequence[float]) -> str:
  """'84.21 ± 0.35 [84.0, 84.6, 84.0]' for several seeds (mean, sample std, each seed's value), '84.21' for one."""
  if len(values) == 1:
    return mean_std(values)
  return f"{mean_std(values)} [{', '.join(f'{v:.1f}' for v in values)}]"


@dataclasses.dataclass(frozen=True)
class Ordering:
  """A paper's claim 'better beats worse' (by at least `margin` points of the task's main metric; a negative margin
  = 'no more than -margin points below')."""
  claim: str
  better: str
  worse: str
  margin: float = 0.0


ORDERINGS = (
    Ordering("parallel adapter > sequential adapter (He et al. 2022, Table 3)", "parallel_adapter",
             "sequential_adapter"),
    Ordering("scaled parallel adapter > plain parallel adapter (He et al. 2022, Table 5)", "scaled_parallel_adapter",
             "parallel_adapter"),
    Ordering("GPC > prompt tuning (Liu et al. 2023; reconstructed cell)", "gpc", "prompt_tuning_random"),
    Ordering("FL-tuning > prompt tuning (Liu et al. 2022)", "fl_tuning", "prompt_tuning_random"),
    Ordering("PASTA within 2 points of full fine-tuning (METHODS.md §E(6))", "pasta", "full_finetuning", -2.0),
)
"""The orderings RESULTS.md states (ensemble vs best single prompt comes from ensembles.json)."""
TARGETS = {"bert_glue_sst2": 66.0}
"""Task -> every method's floor on its main metric (15 points above SST-2 dev's majority class, 50.92)."""
FULL_FINETUNING_TARGET = ("bert_glue_sst2", 85.0)


def main_metric(runs: Sequence[dict]) -> list[float]:
  return [r["metrics"][config.TASKS[r["task"]].metrics[0]] for r in runs]


def binomial_se(a: dict, b: dict) -> float:
  """The standard error, in points, of the gap between two single runs' accuracies (result.json 'metrics' with
  'accuracy' in % and 'num_examples'), each run's accuracy taken as a binomial proportion over its eval examples and
  the two as independent: 100 sqrt(p_a (1 - p_a) / N_a + p_b (1 - p_b) / N_b). It measures the eval set's sampling
  noise only, not the seed's (which the 3-seed rows show is often larger)."""
  pa, pb = a["accuracy"] / 100, b["accuracy"] / 100
  return 100 * (pa * (1 - pa) / a["num_examples"] + pb * (1 - pb) / b["num_examples"]) ** 0.5


def orderings_markdown(setting: config.Setting, results: list[dict]) -> list[str]:
  """Per ordering and task (the tasks with the most seeds first): both sides' mean ± std and holds / does not hold
  on the means, marked when the gap (less the ordering's margin) is smaller than its noise: with several seeds on
  either side, 'within one std' (the larger sample std); with one seed on an accuracy metric, 'within one
  binomial s.e.' (binomial_se); with one seed on another metric, 'one seed, no spread measured'."""
  lines = []
  for o in ORDERINGS:
    for task in setting.tasks:
      a, b = ([r for r in results if r["task"] == task and r["method"] == m] for m in (o.better, o.worse))
      if not a or not b:
        continue
      va, vb = main_metric(a), main_metric(b)
      gap = statistics.mean(va) - statistics.mean(vb)
      verdict = "holds" if gap > o.margin else "does not hold"
      if max(len(va), len(vb)) > 1:  # (a side with one seed while the table fills in counts as spread 0)
        if abs(gap - o.margin) < max(statistics.stdev(v) if len(v) > 1 else 0.0 for v in (va, vb)):
          verdict += " (gap within one std)"
      elif config.TASKS[task].metrics[0] == "accuracy":
        se = binomial_se(a[0]["metrics"], b[0]["metrics"])
        if abs(gap - o.margin) < se:
          verdict += f" (gap within one binomial s.e., {se:.2f})"
      else:
        verdict += " (one seed, no spread measured)"
      lines.append(f"- {o.claim}, {config.TASKS[task].label} (n={min(len(va), len(vb))}): {seed_values(va)} vs "
                   f"{seed_values(vb)}, gap {gap:+.2f}: **{verdict}**")
  return lines


def targets_markdown(setting: config.Setting, results: list[dict]) -> list[str]:
  """Every method at or above TARGETS on each target task, full fine-tuning at FULL_FINETUNING_TARGET."""
  lines = []
  for task, floor in TARGETS.items():
    for method in setting.methods:
      runs = [r for r in results if r["task"] == task and r["method"] == method]
      if runs:
        value = statistics.mean(main_metric(runs))
        lines.append(f"- {config.METHODS[method].label} on {config.TASKS[task].label} >= {floor}: {value:.2f} "
                     f"**{'met' if value >= floor else 'missed'}**")
  task, floor = FULL_FINETUNING_TARGET
  runs = [r for r in results if r["task"] == task and r["method"] == "full_finetuning"]
  if runs:
    value = statistics.mean(main_metric(runs))
    lines.append(f"- full fine-tuning on {config.TASKS[task].label} >= {floor}: {value:.2f} "
                 f"**{'met' if value >= floor else 'missed'}**")
  return lines


def plateau_markdown(setting: config.Setting, results: list[dict]) -> list[str]:
  """A table, method x task: mean train-batch accuracy over the run's last fifth of steps and its change from the
  fourth fifth (mean over seeds; training.train_accuracy_fifths), the evidence of how far each run is from its
  plateau at this budget."""
  tasks = [t for t in setting.tasks if any(r["task"] == t and r.get("train_accuracy_fifths") for r in results)]
  if not tasks:
    return []
  lines = ["| method | " + " | ".join(config.TASKS[t].label for t in tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
  for method in setting.methods:
    cells = []
    for task in tasks:
      fifths = [r["train_accuracy_fifths"] for r in results
                if r["task"] == task and r["method"] == method and r.get("train_accuracy_fifths")]
      cells.append(f"{statistics.mean(f[4] for f in fifths):.1f} ({statistics.mean(f[4] - f[3] for f in fifths):+.1f})"
                   if fifths else "—")
    if any(c != "—" for c in cells):
      lines.append(f"| {config.METHODS[method].label} | " + " | ".join(cells) + " |")
  return lines


def cost_markdown(setting: config.Setting, results: list[dict]) -> list[str]:
  """Per task (the setting's order) and in all: finished runs, steps x batch each and the sum of their wall
  times (result.json's wall_seconds: training, evaluation and compiles of each run, whatever else shared the
  machine)."""
  lines, total_runs, total_hours = [], 0, 0.0
  for task in setting.tasks:
    runs = [r for r in results if r["task"] == task]
    if runs:
      hours = sum(r["wall_seconds"] for r in runs) / 3600
      total_runs, total_hours = total_runs + len(runs), total_hours + hours
      shapes = sorted({(r["train_steps"], r["batch_size"]) for r in runs})
      lines.append(f"- {config.TASKS[task].label}: {_count(len(runs), 'run')} of "
                   f"{', '.join(f'{steps} steps x {batch}' for steps, batch in shapes)}, {hours:.2f} h")
  if lines:
    lines.append(f"- in all: {_count(total_runs, 'run')}, {total_hours:.2f} h")
  return lines


def _count(n: int, noun: str) -> str:
  """'1 run', '2 runs'."""
  return f"{n} {noun}{'' if n == 1 else 's'}"


def notes(setting_name: str, setting: config.Setting) -> list[str]:
  """The cut of this setting in words (goes into both outputs)."""
  lines = [f"setting {setting_name}: seeds {list(setting.seeds)}, batch {setting.batch_size}, input length "
           f"min(task length, {setting.max_length}), steps "
           f"{ {config.TASKS[t].label: setting.steps(t) for t in setting.tasks} }, "
           f"learning rates of gin/results (or the sweep's), evaluation "
           f"{'every %d steps, the last reported' % setting.eval_period if setting.eval_period else 'at the end'}"
           f"{'' if setting.eval_max_examples is None else f' on the first {setting.eval_max_examples} examples'}."]
  if setting.holdout:
    lines.append("evaluated on a holdout of each task's train split (prompt_tuning_jax/experiments/task_variants.py), "
                 "trained on the rest; the dev set is not read.")
  if not setting.use_minilm:
    lines.append("backbone: a seeded random tiny BERT (no checkpoint): plumbing only, the numbers mean nothing.")
  if config.BOOLQ in setting.tasks:
    lines.append(BOOLQ_NOTE)
  return lines


def payload(command: str, setting_name: str, setting: config.Setting, results: list[dict]) -> dict[str, Any]:
  return {"command": command, "setting": {"name": setting_name, **dataclasses.asdict(setting)},
          "notes": notes(setting_name, setting), "runs": results}


def blocks(setting: config.Setting, results: list[dict]) -> dict[str, list[str]]:
  """The report's parts as markdown lines (empty where nothing finished): 'table' (methods x tasks, the
  setting's order), 'targets', 'orderings', 'plateau', 'wall' (cost_markdown)."""
  tasks = [t for t in setting.tasks if any(r["task"] == t for r in results)]
  header = ["method", "trainable (%)"] + [
      f"{config.TASKS[t].label} ({' / '.join(config.TASKS[t].metrics)})" for t in tasks] + (
      [f"{config.TASKS[tasks[0]].label} step ms (median)"] if tasks else [])
  table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for method in setting.methods:
    mine = [r for r in results if r["method"] == method]
    if not mine:
      continue
    first = next(r for t in tasks for r in mine if r["task"] == t)
    cells = [config.METHODS[method].label, f"{first['trainable_parameters']:,} ({first['trainable_percent']:.3f}%)"]
    for task in tasks:
      runs = [r for r in mine if r["task"] == task]
      cells.append(" / ".join(seed_values([r["metrics"][m] for r in runs]) for m in config.TASKS[task].metrics)
                   + (f" (n={len(runs)})" if len(runs) > 1 else "") if runs else "—")
    steps = [r["step_seconds"] for r in mine if r["task"] == tasks[0] and r["step_seconds"] is not None]
    cells.append(f"{1000 * statistics.median(steps):.0f}" if steps else "—")
    table.append("| " + " | ".join(cells) + " |")
  return {"table": table, "targets": targets_markdown(setting, results),
          "orderings": orderings_markdown(setting, results), "plateau": plateau_markdown(setting, results),
          "wall": cost_markdown(setting, results)}


def markdown(command: str, setting_name: str, setting: config.Setting, results: list[dict],
             parts: Optional[dict[str, list[str]]] = None) -> str:
  """The method-comparison report of `results`: the command, the setting's notes and `blocks` with headings
  (`parts`: the blocks when the caller has them already)."""
  parts = parts or blocks(setting, results)
  lines = [f"Command: `{command}`", ""] + [f"- {line}" for line in notes(setting_name, setting)] + [""] + parts["table"]
  for name, heading in (("targets", "Targets:"), ("orderings", "The papers' orderings (main metric, mean over seeds):"),
                        ("plateau", "Train accuracy (%) over the last fifth of steps (change from the fourth fifth), "
                                    "mean over seeds:")):
    if parts[name]:
      lines += ["", heading, ""] + parts[name]
  lines += ["", "Wall time of the finished runs (sum over runs):", ""] + parts["wall"]
  return "\n".join(lines) + "\n"


def splice(doc: str, parts: dict[str, list[str]], path: str, marker: str = "results") -> str:
  """`doc` with each part that has markers in it (`<!-- MARKER:NAME -->` ... `<!-- /MARKER:NAME -->`, each on its
  own line; MARKER = `marker`, so one page can hold two reports' blocks) replaced by the part's lines; the text
  outside the markers is kept. `path` names the document in the error raised when it has no markers at all or an
  opening marker without its closing one."""
  if not re.fullmatch(r"[a-z][a-z0-9_-]*", marker):
    raise ValueError(f"marker {marker!r}: lower-case letters, digits, '_' and '-' only")
  found = 0
  for name, lines in parts.items():
    begin, end = f"<!-- {marker}:{name} -->\n", f"<!-- /{marker}:{name} -->"
    if begin not in doc:
      continue
    start = doc.index(begin) + len(begin)
    stop = doc.find(end, start)
    if stop < 0:
      raise ValueError(f"{path}: '{begin.strip()}' has no '{end}' after it")
    doc, found = doc[:start] + "".join(line + "\n" for line in lines) + doc[stop:], found + 1
  if not found:
    raise ValueError(f"{path}: no '<!-- {marker}:NAME -->' marker for any of {sorted(parts)}")
  return doc


def ensemble_markdown(command: str, reports: list[dict]) -> str:
  """Per task: each prompt, their mean and best, majority vote and mean-log-prob (runs.evaluate's report), the
  ensemble-vs-best verdicts and how often the prompts agree (prompt_ensembles.agreement)."""
  lines = [f"Command: `{command}`", "", "| task | metric | head run (prompt + head) | " + " | ".join(
      f"prompt {k}" for k in range(max(r["num_prompts"] for r in reports))) + " | mean | best | majority vote | "
      "mean log-prob |", "|" + "---|" * (7 + max(r["num_prompts"] for r in reports))]
  for report in reports:
    metrics = report["metrics"]
    for name in config.TASKS[report["task"]].metrics:
      prompts = [f"{metrics[f'prompt_{k}/{name}']:.2f}" for k in range(report["num_prompts"])]
      combined = [f"{metrics[f'{c}/{name}']:.2f}" for c in ("mean", "best", "majority_vote", "mean_log_prob")]
      lines.append(f"| {config.TASKS[report['task']].label} | {name} | {report['head_metrics'][name]:.2f} | "
                   + " | ".join(prompts + combined) + " |")
  lines += ["", "Ensemble > best single prompt (Lester et al. 2021: majority vote of 5 prompts 91.3 vs best 91.0, SuperGLUE; main metric):", ""]
  for report in reports:
    name, metrics = config.TASKS[report["task"]].metrics[0], report["metrics"]
    for combined in ("majority_vote", "mean_log_prob"):
      gap = metrics[f"{combined}/{name}"] - metrics[f"best/{name}"]
      lines.append(f"- {config.TASKS[report['task']].label}, {combined.replace('_', ' ')}: "
                   f"{metrics[f'{combined}/{name}']:.2f} vs best {metrics[f'best/{name}']:.2f}, gap {gap:+.2f}: "
                   f"**{'holds' if gap > 0 else 'does not hold'}**")
  lines += ["", "How different the prompts' predictions are (a vote can only fix an example some prompt gets right):", ""]
  for report in reports:
    a = report["agreement"]
    lines.append(f"- {config.TASKS[report['task']].label}: all {report['num_prompts']} prompts agree on "
                 f"{a['all_agree']:.1f}% of the examples, a pair of prompts on {a['pairwise']:.1f}% (mean over "
                 f"pairs); some prompt is right on {a['any_correct']:.1f}%")
  return "\n".join(lines) + "\n"


def sweep_markdown(command: str, results: list[dict]) -> str:
  """One row per (task, method, head variant): the main metric at each learning rate, the best marked, and the
  features' mean pairwise cosine (collapse) at the best."""
  lines = [f"Command: `{command}`", "", "| task | method | head | learning rates: main metric (feature cosine) | best |",
           "|---|---|---|---|---|"]
  keys = dict.fromkeys((r["task"], r["method"], r.get("variant")) for r in results)
  for task, method, variant in keys:
    runs = sorted((r for r in results if (r["task"], r["method"], r.get("variant")) == (task, method, variant)),
                  key=lambda r: r["learning_rate"] or 0)
    metric = config.TASKS[task].metrics[0]
    best = max(runs, key=lambda r: r["metrics"][metric])
    cells = [f"{r['learning_rate']:g}: {r['metrics'][metric]:.2f} ({r['metrics'].get('feature_cosine', float('nan')):.3f})"
             if r["learning_rate"] is not None else
             f"{r['metrics'][metric]:.2f} ({r['metrics'].get('feature_cosine', float('nan')):.3f})" for r in runs]
    lines.append(f"| {config.TASKS[task].label} | {config.METHODS[method].label} | {variant or '-'} | "
                 f"{'; '.join(cells)} | {best['learning_rate'] if best['learning_rate'] is not None else '-'} |")
  return "\n".join(lines) + "\n"
