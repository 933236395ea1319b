"""The HF PEFT side of a row, in the same process: transformers + peft, same shapes, AdamW steps.

  if peft_side.unavailable() is None:
    step, finish = peft_side.prepare(row, options, config, batch)   # then timing.interleaved, as ours
    result = finish(times)                                          # {'step_s', 'tokens_per_s', ...}

The model is transformers' T5ForConditionalGeneration / BertForSequenceClassification with random weights,
its config converted from ours (so both sides have the same sizes), wrapped with peft's PromptTuningConfig
(the same num_virtual_tokens; num_transformer_submodules=1: the prompt joins the encoder only, as ours),
LoraConfig (same r, alpha, q/v targets, no dropout) or PrefixTuningConfig, or unwrapped (full fine-tuning;
BitFit trains the same patterns). A step is forward, loss.backward(), AdamW.step(): bf16 autocast on GPU,
float32 with torch threads = the CPU count on CPU. The batch is the one our side trains on.
"""
import os
import re
import statistics
from typing import Any, Callable, Optional

import numpy as np

from prompt_tuning_jax.bench import grid


def unavailable() -> Optional[str]:
  """None when torch, transformers and peft import; else why not."""
  try:
    import peft  # pylint: disable=import-outside-toplevel,unused-import
    import torch  # pylint: disable=import-outside-toplevel,unused-import
    import transformers  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    return f"{type(e).__name__}: {e}"
  return None


def versions() -> dict[str, str]:
  import peft, torch, transformers  # pylint: disable=import-outside-toplevel,multiple-imports
  return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def hf_model(config: Any) -> Any:
  """Our T5Config / BertConfig -> the transformers model of the same sizes, randomly initialised."""
  import transformers  # pylint: disable=import-outside-toplevel
  if grid.is_t5(config):
    gated = len(config.mlp_activations) == 2
    hf = transformers.T5Config(
        vocab_size=config.vocab_size, d_model=config.embed_dim, d_kv=config.head_dim, d_ff=config.mlp_dim,
        num_layers=config.num_encoder_layers, num_decoder_layers=config.num_decoder_layers,
        num_heads=config.num_heads, relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=config.relative_attention_max_distance, dropout_rate=config.dropout_rate,
        layer_norm_epsilon=config.layer_norm_epsilon, feed_forward_proj="gated-gelu" if gated else "relu",
        tie_word_embeddings=config.logits_via_embedding, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return transformers.T5ForConditionalGeneration(hf)
  hf = transformers.BertConfig(
      vocab_size=config.vocab_size, hidden_size=config.embed_dim, num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads, intermediate_size=config.mlp_dim, hidden_act=config.activation,
      hidden_dropout_prob=config.dropout_rate, attention_probs_dropout_prob=config.attention_dropout_rate,
      max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
      layer_norm_eps=config.layer_norm_epsilon, pad_token_id=config.pad_token_id, num_labels=config.num_labels)
  return transformers.BertForSequenceClassification(hf)


def wrap(model: Any, row: grid.Row, config: Any) -> Any:
  """Applies the row's PEFT setup (grid.Method.peft) to the transformers model."""
  import peft  # pylint: disable=import-outside-toplevel
  kind = grid.METHODS[row.method].peft
  task = peft.TaskType.SEQ_2_SEQ_LM if grid.is_t5(config) else peft.TaskType.SEQ_CLS
  if kind == "none":
    return model
  if kind == "bitfit":
    patterns = [re.compile(p) for p in (r"\.bias$", r"^classifier\.", r"layer_norm\.weight$")]
    for name, parameter in model.named_parameters():
      parameter.requires_grad_(any(p.search(name) for p in patterns))
    return model
  if kind == "prompt_tuning":
    setup = peft.PromptTuningConfig(task_type=task, num_virtual_tokens=row.prompt_length,
                                    num_transformer_submodules=1)
  elif kind == "lora":
    targets = ["q", "v"] if grid.is_t5(config) else ["query", "value"]
    setup = peft.LoraConfig(task_type=task, r=row.lora_rank, lora_alpha=row.lora_alpha, lora_dropout=0.0,
                            target_modules=targets)
  elif kind == "prefix_tuning":
    setup = peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=30, prefix_projection=True,
                                    encoder_hidden_size=800)
  else:
    raise ValueError(f"method {row.method!r} has no PEFT counterpart")
  return peft.get_peft_model(model, setup)


def torch_batch(batch: dict[str, np.ndarray], t5_model: bool, device: Any) -> dict[str, Any]:
  """Our batch (models/inputs.py names) -> the transformers forward's keyword arguments."""
  import torch  # pylint: disable=import-outside-toplevel
  as_tensor = lambda x: torch.as_tensor(np.asarray(x, np.int64), device=device)
  if t5_model:
    tokens = batch["encoder_input_tokens"]
    return {"input_ids": as_tensor(tokens), "attention_mask": as_tensor(tokens > 0),
            "labels": as_tensor(batch["decoder_target_tokens"])}
  return {k: as_tensor(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}


def prepare(row: grid.Row, options: grid.Options, config: Any, batch: dict[str, np.ndarray]
            ) -> tuple[Callable[[], None], Callable[[list[float]], dict]]:
  """Builds the PEFT model -> (step: one AdamW step, synchronised; finish: timed seconds -> result).

  Memory (torch's peak allocated bytes since `prepare`) on GPU only; None on CPU.
  """
  import torch  # pylint: disable=import-outside-toplevel
  gpu = torch.cuda.is_available()
  device = torch.device("cuda" if gpu else "cpu")
  if not gpu:
    torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  if gpu:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
  model = wrap(hf_model(config), row, config).to(device)
  model.train()
  parameters = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.01)
  inputs = torch_batch(batch, grid.is_t5(config), device)
  last = {}

  def one_step() -> None:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
      loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if gpu:
      torch.cuda.synchronize()
    last["loss"] = loss.detach()

  def finish(times: list[float]) -> dict:
    step_s = statistics.median(times)
    result = {"step_s": step_s, "step_times_s": times,
              "tokens_per_s": (row.input_length + row.target_length) * row.batch / step_s,
              "peak_memory_bytes": int(torch.cuda.max_memory_allocated()) if gpu else None,
              "loss": float(last["loss"]), "trainable_params": sum(p.numel() for p in parameters),
              "attn_implementation": getattr(getattr(model, "config", None), "_attn_implementation", None),
              "torch_threads": torch.get_num_threads()}
    parameters.clear()
    last.clear()
    return result

  return one_step, finish
