"""The experiments of docs/RESULTS.md as a library: what scripts/*.py run, and what the notebooks and tests import.

  config.py            the results table's tasks, methods (gin/results/*.gin), learning-rate sweeps and settings
  task_variants.py     BoolQ's val split and the sweeps' train-split holdouts, registered as BERT tasks on demand
  training.py          one run: gin files + bindings -> runs.train -> <out_dir>/<run>/result.json (resumable)
  report.py            results.json / results.md (mean ± std over seeds, targets, the papers' orderings)
  prompt_ensembles.py  K prompt runs sharing one frozen head, scored in one pass (--ensembles)
  results.py           scripts/results.py's work: the setting cut by its flags, the plan, the outputs
  step_flops.py        a gin-configured train step's FLOPs (train/cost.py): the scale-ablation notebook's
  trajectories.py      our training steps against PEFT's / torch's (scripts/trajectories.py, tests/peft)
  prompt_scale.py      prompt and GPC row norms on MiniLM (scripts/prompt_scale.py)
  linear_probe.py      probes on the frozen MiniLM's features (scripts/linear_probe.py)
  examples.py          the first examples of a task's split as numpy arrays

Importing the package imports nothing else; trajectories.py needs torch, transformers and peft (the test extra).
"""
