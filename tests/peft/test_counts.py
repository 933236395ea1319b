"""Parameter counts through `parameter_report` (abstract shapes only) and the `params` CLI."""
import glob
import json
import os
import subprocess
import sys

import gin
import pytest

from prompt_tuning_jax import gin_utils, params
from prompt_tuning_jax.models import bert_config

T5_BASE, BERT_BASE = "models/t5_1_1_base.gin", "models/bert_base.gin"
T5_BASE_TOTAL = 247_577_856  # METHODS.md §0.2
BERT_BASE_TOTAL = 109_482_240 + 768 * 2 + 2  # + the 2-label classifier
METHOD_FILES = sorted(os.path.relpath(f, gin_utils.gin_dir())
                      for f in glob.glob(os.path.join(gin_utils.gin_dir(), "methods", "*.gin")))


@pytest.mark.parametrize("model_file,total", [(T5_BASE, T5_BASE_TOTAL), (BERT_BASE, BERT_BASE_TOTAL)])
def test_full_finetuning_trains_everything(model_file, total, parameter_report):
  report = parameter_report([model_file, "methods/full_finetuning.gin"])
  assert report["total"] == report["trainable"] == total
  assert report["trainable_percent"] == 100.0 and report["methods"] == {}


def test_bitfit_counts(parameter_report):
  t5 = parameter_report([T5_BASE, "methods/bitfit.gin"])
  # T5 has no biases: the RMSNorm scales, 2 per encoder layer, 3 per decoder layer, plus the two final norms.
  assert t5["trainable_by_module"] == {"scale": (12 * 2 + 12 * 3 + 2) * 768} and t5["trainable"] == 47_616
  bert = parameter_report([BERT_BASE, "methods/bitfit.gin"])
  per_layer = 4 * 768 + 3072 + 768 + 2 * 768  # q, k, v, out; wi; wo; two LayerNorm biases
  biases = 12 * per_layer + 768 + 768  # + embedding LayerNorm, pooler
  assert bert["trainable_by_module"] == {"bias": biases, "classifier": 768 * 2 + 2}
  assert bert["trainable"] == 104_450 and bert["total"] == BERT_BASE_TOTAL


def test_no_method_trains_nothing_on_t5_and_the_head_on_bert(parameter_report):
  assert parameter_report([T5_BASE])["trainable"] == 0
  report = parameter_report([BERT_BASE], ["NUM_LABELS = 3"])
  assert report["trainable_by_module"] == {"classifier": 768 * 3 + 3}


@pytest.mark.parametrize("model_file", [T5_BASE, BERT_BASE])
@pytest.mark.parametrize("method_file", METHOD_FILES)
def test_every_method_reports(model_file, method_file, parameter_report):
  report = parameter_report([model_file, method_file])
  assert 0 < report["trainable"] <= report["total"]
  assert sum(report["trainable_by_module"].values()) == report["trainable"]
  if method_file not in ("methods/full_finetuning.gin", "methods/bitfit.gin"):
    assert report["methods"], f"{method_file} binds no slot"
    assert report["trainable"] < report["total"], report


@pytest.mark.parametrize("name,total,embed_dim", [("bert_base", 109_482_240, 768),
                                                  ("bert_large", 335_141_888, 1024), ("minilm", 22_713_216, 384)])
def test_bert_model_files(name, total, embed_dim, parameter_report):
  report = parameter_report([f"models/{name}.gin"])
  assert report["model"] == "BertForSequenceClassification"
  assert report["total"] - report["trainable"] == total  # the head is the only trained part
  assert report["trainable_by_module"] == {"classifier": embed_dim * 2 + 2}
  tokens = parameter_report([f"models/{name}.gin", "models/bert_token_classification.gin"])
  assert tokens["model"] == "BertForTokenClassification"
  assert report["total"] - tokens["total"] == embed_dim ** 2 + embed_dim  # the token head has no pooler
  assert tokens["trainable_by_module"] == {"classifier": embed_dim * 2 + 2}  # the token head trains too


def test_minilm_file_matches_the_shipped_config(minilm_dir):
  gin_utils.parse_gin(["models/minilm.gin"])
  model = gin_utils.configured_macro("MODEL")
  with open(os.path.join(minilm_dir, "config.json")) as f:
    assert model.config == bert_config.bert_config_from_hf(json.load(f), num_labels=2)


def test_cli_prints_a_table_and_json_last():
  out = subprocess.run([sys.executable, "-m", "prompt_tuning_jax.params", f"--gin_file={BERT_BASE}",
                        "--gin_file", "methods/bitfit.gin", "--gin.NUM_LABELS=3"],
                       capture_output=True, text=True, check=True, cwd="/").stdout.strip().splitlines()
  report = json.loads(out[-1])
  assert report["trainable_by_module"] == {"bias": 102_912, "classifier": 768 * 3 + 3}
  assert report["total"] == 109_482_240 + 768 * 3 + 3 and report["trainable"] == 102_912 + 768 * 3 + 3
  assert any(line.split()[:2] == ["bias", "102,912"] for line in out[:-1])


def test_cli_user_errors(capsys):
  assert params.main(["--gin_file=models/t5_1_1_base.gin", "--gin_file=methods/prompt_tunning.gin"]) == 1
  assert "close matches" in capsys.readouterr().err
  assert params.main(["--gin_file=models/t5_1_1_base.gin", "--gin.slots.Slots.lora_delta=None"]) == 1
  assert "lora_delta" in capsys.readouterr().err
  assert params.main(["--verbose"]) == 2
