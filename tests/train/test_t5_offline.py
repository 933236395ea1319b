"""The README's T5 command on a machine without network: the vocabulary comes from the HF checkpoint directory
(spiece.model, as transformers writes it), or the run stops in one line naming the file and
PROMPT_TUNING_T5_VOCAB before anything starts (tasks/vocabularies.py, runs.check_vocabulary)."""
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
import sentencepiece

from prompt_tuning_jax.checkpoints import hf_t5
from prompt_tuning_jax.checkpoints.peft_io import PeftCheckpointManager
from prompt_tuning_jax.models import t5_config
from prompt_tuning_jax.models.t5 import T5
from tasks import data_dir, vocabularies

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(vocab_size=512, embed_dim=16, num_heads=2, head_dim=8, mlp_dim=24, num_encoder_layers=2,
            num_decoder_layers=2)


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
  """A tiny random T5 1.1 exported as a HF directory, with a 400-piece SentencePiece model as spiece.model."""
  directory = tmp_path_factory.mktemp("t5_hf")
  with open(os.path.join(data_dir.SHARED_DATA_DIR, "super_glue/RTE/train.jsonl"), encoding="utf-8") as f:
    text = [line for _, line in zip(range(400), f)]
  (directory / "text.txt").write_text("".join(text), encoding="utf-8")
  sentencepiece.SentencePieceTrainer.train(input=str(directory / "text.txt"), model_prefix=str(directory / "spiece"),
                                           vocab_size=400, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                           minloglevel=2)
  config = t5_config.preset("t5_1_1_small", **TINY)
  tokens = np.ones((1, 4), np.int32)
  params = nn.meta.unbox(T5(config).init(jax.random.key(0), tokens, tokens)["params"])
  hf_t5.export_hf_t5(jax.tree_util.tree_map(np.asarray, params), config, str(directory))
  return str(directory)


def train(model_dir: str, *bindings: str, env: dict) -> subprocess.CompletedProcess:
  """The README's T5 training command (t5_1_1_small, prompt tuning, RTE taskless), tiny and one step."""
  tiny = [f"t5_config.preset.{k} = {v}" for k, v in TINY.items()]
  bindings = tiny + [f"MODEL_DIR = '{model_dir}'", "MIXTURE_OR_TASK_NAME = 'super_glue_rte_taskless'",
                     "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 4}", "BATCH_SIZE = 2", "TRAIN_STEPS = 1",
                     "PROMPT_LENGTH = 4", "runs.Evaluation.split = None", "runs.train.show_progress = False",
                     *bindings]
  argv = [sys.executable, "-m", "prompt_tuning_jax.train", "--gin_file=models/t5_1_1_small.gin",
          "--gin_file=methods/prompt_tuning.gin", "--gin_file=runs/finetune.gin"] + [f"--gin.{b}" for b in bindings]
  return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def clean_env(**extra: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k != vocabularies.T5_VOCAB_ENV}
  return {**env, **extra}


@pytest.mark.slow
def test_the_hf_checkpoints_spiece_model_is_the_default_vocabulary(tmp_path, hf_checkpoint):
  model_dir = str(tmp_path / "run")
  process = train(model_dir, f"INITIAL_CHECKPOINT_PATH = '{hf_checkpoint}'", env=clean_env())
  assert process.returncode == 0, process.stderr[-3000:]
  manager = PeftCheckpointManager(os.path.join(model_dir, "checkpoints"))
  vocabulary = manager.read_metadata(manager.steps()[-1])["vocabulary"]
  assert vocabulary["path"] == os.path.join(hf_checkpoint, "spiece.model")
  assert vocabulary["vocab_size"] == 400 + vocabularies.T5_EXTRA_IDS


@pytest.mark.slow
def test_an_unreadable_vocabulary_stops_the_run_in_one_line(tmp_path):
  missing = str(tmp_path / "sentencepiece.model")
  model_dir = str(tmp_path / "run")
  process = train(model_dir, env=clean_env(**{vocabularies.T5_VOCAB_ENV: missing}))
  assert process.returncode == 1, process.stderr[-3000:]
  errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: FileNotFoundError: T5 vocabulary {missing}: no such file; set PROMPT_TUNING_T5_VOCAB "
                    f"to a local SentencePiece model, or INITIAL_CHECKPOINT_PATH to a HF T5 directory holding "
                    f"spiece.model (README: T5 offline)"], process.stderr[-3000:]
  assert "Traceback" not in process.stderr
  assert not os.path.exists(model_dir)  # checked before anything starts
