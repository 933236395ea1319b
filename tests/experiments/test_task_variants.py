"""The results table's task variants (experiments/task_variants.py): the sweeps' holdout and BoolQ's val split."""
import os

import pytest

from prompt_tuning_jax.experiments import task_variants
from tasks import data_dir, registry


def line_numbers(spec, split):
  path = os.path.join(data_dir.resolve().path, spec.local.split_files[split])
  file_format = spec.local.file_format
  file_format = file_format[split] if isinstance(file_format, dict) else file_format
  return [number for number, _ in file_format.rows(path)]


def test_holdout_is_a_seeded_part_of_train_and_the_rest_trains():
  spec = registry.DATASETS["super_glue_cb"]
  every = line_numbers(spec, "train")
  variant = task_variants.holdout(spec, 0.2, seed=0)
  train, held = line_numbers(variant, "train"), line_numbers(variant, "validation")
  assert sorted(train + held) == every and not set(train) & set(held)  # disjoint, together the whole file
  assert 0.1 * len(every) < len(held) < 0.3 * len(every)
  assert line_numbers(task_variants.holdout(spec, 0.2, seed=0), "validation") == held  # a pure function of the seed
  assert line_numbers(task_variants.holdout(spec, 0.2, seed=1), "validation") != held
  with pytest.raises(ValueError, match="fraction=1.5"):
    task_variants.holdout(spec, 1.5, seed=0)


def test_boolq_holdout_comes_from_its_val_split_train_rows():
  spec = task_variants.boolq_valsplit(2000)
  assert len(line_numbers(spec, "train")) == 2000
  variant = task_variants.holdout(spec, 0.1, seed=0)
  train, held = line_numbers(variant, "train"), line_numbers(variant, "validation")
  assert sorted(train + held) == line_numbers(spec, "train")
  assert not set(held) & set(line_numbers(spec, "validation"))  # never the rows BoolQ* reports on


@pytest.fixture
def holdout_task():
  """Registers CB's holdout task; removes it afterwards (no global state leaks into other tests)."""
  name = task_variants.register_holdout("bert_super_glue_cb", 0.2)
  yield name
  registry.remove_task(name)


def test_registered_holdout_task_reads_the_holdout_as_validation(holdout_task):
  name = holdout_task
  assert name == "bert_super_glue_cb_holdout" and task_variants.register_holdout("bert_super_glue_cb", 0.2) == name
  held = line_numbers(task_variants.holdout(registry.DATASETS["super_glue_cb"], 0.2, 0), "validation")
  examples = list(registry.task_dataset(name, "validation", {"input_ids": 32}).as_numpy_iterator())
  assert len(examples) == len(held)
  with pytest.raises(ValueError, match="variants are of BERT tasks"):
    task_variants.register_holdout("super_glue_cb", 0.2, spec=registry.DATASETS["super_glue_cb"])
