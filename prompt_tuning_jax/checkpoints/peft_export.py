"""Exports trained PEFT parameters: a prompt as .npy, and LoRA / prompt tuning in Hugging Face PEFT's layout.

`export_hf_peft` writes `adapter_config.json` + `adapter_model.safetensors`, which
`peft.PeftModel.from_pretrained(base, dir)` loads on top of the transformers model that hf_t5.py / hf_bert.py
export from the same frozen params. Only exact equivalents are written (tests/checkpoints/test_peft_export.py
compares the logits against peft):
  LoRA: ours y = x W + (alpha / r) x A B, A [in, r], B [r, out]; PEFT's y = base(x) + (lora_alpha / r)
    lora_B(lora_A(x)), so lora_A.weight [r, in] = A^T and lora_B.weight [out, r] = B^T; r, lora_alpha and
    lora_dropout come from the model's projection_delta slot. `target_modules` holds the shortest HF
    module-name suffixes that PEFT's suffix matching maps onto exactly the adapted projections (q, v on T5;
    query, value on BERT). BERT heads: PEFT's SEQ_CLS / TOKEN_CLS always train `classifier`
    (modules_to_save), so the adapter carries ours.
  Prompt tuning, T5 only: PeftModelForSeq2SeqLM prepends the virtual tokens to the encoder inputs_embeds and
    ones to the attention_mask, which is our 'prefix' placement (before the input dropout, relative positions
    spanning P + n). num_transformer_submodules = 1: PEFT's seq2seq default 2 allocates a second block of P
    rows for the decoder, which our model does not have.
Unsupported (ValueError): BERT prompt tuning (ours sits after [CLS] on the LayerNorm-ed embeddings with no
position embedding; PEFT's goes before [CLS] through the position embeddings and LayerNorm, and the pooler
then reads a virtual token), T5 'after_bos', LoRA and prompt together, and any other method's parameter.
"""
import json
import os
import re
from typing import Any, Optional

import flax.linen as nn
import numpy as np
from safetensors.numpy import save_file

from prompt_tuning_jax.checkpoints import hf_bert, hf_io, hf_t5
from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.models import bert
from prompt_tuning_jax.models.t5 import T5, unscan_params
from prompt_tuning_jax.peft.lora import LoRA
from prompt_tuning_jax.peft.prompt_params import is_prompt_bank
from prompt_tuning_jax.peft.prompts import Prompt

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PEFT's prefix on every LoRA and modules_to_save tensor name
_LORA = re.compile(r"^(?P<site>.+)/lora_(?P<target>\w+)/[ab]$")
# BERT model class -> (hf_bert head, PEFT task_type).
_BERT_TASKS = {bert.BertForSequenceClassification: ("sequence_classification", "SEQ_CLS"),
               bert.BertForTokenClassification: ("token_classification", "TOKEN_CLS"),
               bert.BertModel: (None, "FEATURE_EXTRACTION")}


def find_prompt(params: dict, prompt_id: int = 0) -> tuple[str, np.ndarray]:
  """(path, prompt `prompt_id` float32 [P, d]) of the one bank '.../prompt/prompt' [K, P, d] (T5 or BERT tree)."""
  banks = {p: v for p, v in flatten_params(params).items() if is_prompt_bank(p)}
  if len(banks) != 1:
    raise ValueError(f"expected one prompt bank '.../prompt/prompt' in params, found {len(banks)}: {sorted(banks)}")
  (path, bank), = banks.items()
  bank = np.asarray(bank, np.float32)
  if bank.ndim != 3 or not 0 <= prompt_id < bank.shape[0]:
    raise ValueError(f"prompt_id={prompt_id}, but the bank {path} {bank.shape} holds "
                     f"{bank.shape[0] if bank.ndim == 3 else 'no [num_prompts, P, d]'} prompts")
  return path, bank[prompt_id]  # [K, P, d] -> [P, d]


def export_prompt_npy(params: dict, path: str, prompt_id: int = 0) -> None:
  """Writes prompt `prompt_id` of the bank, float32 [P, d], to exactly `path` (read by prompt_init.FromFile)."""
  _, prompt = find_prompt(params, prompt_id)
  with open(path, "wb") as f:  # a file object: np.save(str) would append '.npy' to a path lacking it
    np.save(f, prompt, allow_pickle=False)


def _family(model: nn.Module) -> tuple[str, str, dict[str, tuple[str, bool]], set[str]]:
  """(backbone, PEFT task_type, base name map {our path: (HF name, transpose)}, every HF module name)."""
  if isinstance(model, T5):
    names = hf_t5.name_map(model.config)
    extra = {alias.removesuffix(".weight") for alias in hf_t5.EMBEDDING_ALIASES} | {"lm_head"}
    backbone, task = "t5", "SEQ_2_SEQ_LM"
  elif type(model) in _BERT_TASKS:
    head, task = _BERT_TASKS[type(model)]
    names, extra, backbone = hf_bert.name_map(model.config, head, "bert." if head else ""), set(), "bert"
  else:
    known = ", ".join(["T5"] + [cls.__name__ for cls in _BERT_TASKS])
    raise ValueError(f"export_hf_peft: model {type(model).__name__} is not supported; known: {known}")
  return backbone, task, names, {hf.rsplit(".", 1)[0] for hf, _ in names.values()} | extra


def _target_modules(adapted: set[str], modules: set[str]) -> list[str]:
  """The shortest suffixes that PEFT's list matching (name == s or name ends in '.' + s) maps onto `adapted`."""
  targets = set()
  for name in adapted:
    parts = name.split(".")
    for start in range(len(parts) - 1, -1, -1):  # start = 0 (the full name) always matches only itself
      suffix = ".".join(parts[start:])
      if all(m in adapted for m in modules if m == suffix or m.endswith("." + suffix)):
        targets.add(suffix)
        break
  return sorted(targets)


def _lora(params: dict, lora_paths: list[str], model: nn.Module, backbone: str, names: dict,
          modules: set[str]) -> tuple[dict, dict]:
  """LoRA A/B (and a BERT head's classifier) -> (LoraConfig fields, PEFT tensors)."""
  flat, slots = flatten_params(params), model.slots.for_backbone(backbone)
  tensors, settings, adapted = {}, {}, set()
  for site, target in sorted({(_LORA.match(p)["site"], _LORA.match(p)["target"]) for p in lora_paths}):
    path, kernel = f"{site}/lora_{target}", f"{site}/{target}/kernel"
    if kernel not in names or f"{path}/a" not in flat or f"{path}/b" not in flat:
      raise ValueError(f"{path}: expected {path}/a, {path}/b and the frozen projection {kernel} in params")
    a, b = np.asarray(flat[f"{path}/a"], np.float32), np.asarray(flat[f"{path}/b"], np.float32)  # [in, r], [r, out]
    stack = next(c for c in site.split("/") if c in ("encoder", "decoder"))
    module = slots.make("projection_delta", where=f"{stack}/{site.split('/')[-1]}", target=target,
                        in_features=a.shape[0], out_features=b.shape[1])
    if not isinstance(module, LoRA) or module.rank != a.shape[1]:
      found = f"LoRA rank={module.rank}" if isinstance(module, LoRA) else type(module).__name__
      raise ValueError(f"{path}: params hold a rank-{a.shape[1]} LoRA, but the model's projection_delta slot "
                       f"gives {found} at {site}/{target}")
    settings[(module.rank, module.alpha, module.dropout_rate)] = path
    hf_module = names[kernel][0].removesuffix(".weight")
    adapted.add(hf_module)
    tensors[f"{PEFT_PREFIX}{hf_module}.lora_A.weight"] = a.T  # [in, r] -> [r, in]
    tensors[f"{PEFT_PREFIX}{hf_module}.lora_B.weight"] = b.T  # [r, out] -> [out, r]
  if len(settings) != 1:
    raise ValueError(f"LoRA sites differ in (rank, alpha, dropout_rate): {settings}; PEFT's LoraConfig holds one")
  (rank, alpha, dropout), = settings
  config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "lora_dropout": dropout,
            "target_modules": _target_modules(adapted, modules), "bias": "none", "fan_in_fan_out": False,
            "use_rslora": False, "use_dora": False, "init_lora_weights": True, "modules_to_save": None}
  if "classifier" in params:  # PEFT's SEQ_CLS / TOKEN_CLS wrap it in modules_to_save: the adapter's one is used
    config["modules_to_save"] = ["classifier"]
    head = hf_io.tensors_from_params({"classifier": params["classifier"]}, names)  # [in, out] -> [out, in]
    tensors.update({PEFT_PREFIX + name: value for name, value in head.items()})
  return config, tensors


def _prompt(params: dict, model: nn.Module, backbone: str, prompt_id: int) -> tuple[dict, dict]:
  """The chosen prompt -> (PromptTuningConfig fields, PEFT tensors); T5 'prefix' placement only."""
  path, prompt = find_prompt(params, prompt_id)
  if backbone == "bert":
    raise ValueError(f"{path}: BERT prompt tuning has no exact HF PEFT form (ours joins after [CLS] on the "
                     "LayerNorm-ed embeddings; PEFT's goes before [CLS] through the position embeddings and "
                     "LayerNorm); use export_prompt_npy")
  cfg = model.config
  module = model.slots.for_backbone(backbone).make("input_transform", where="encoder", embed_dim=cfg.embed_dim)
  if path != "encoder/prompt/prompt" or not isinstance(module, Prompt) or module.offset != 0:
    offset = module.offset if isinstance(module, Prompt) else None
    raise ValueError(f"{path}: PEFT prepends virtual tokens to the encoder input (offset 0, our 'prefix'); "
                     f"the model's input_transform inserts them at offset {offset} ('after_bos' is 1)")
  config = {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": int(prompt.shape[0]),
            "token_dim": int(prompt.shape[1]), "num_transformer_submodules": 1,
            "num_attention_heads": cfg.num_heads, "num_layers": cfg.num_encoder_layers,
            "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None, "tokenizer_name_or_path": None}
  return config, {"prompt_embeddings": prompt}  # [P, d]


def export_hf_peft(params: dict, model: nn.Module, path: str, *, base_model_name_or_path: Optional[str] = None,
                   prompt_id: int = 0) -> dict[str, Any]:
  """Writes `path/adapter_config.json` + `adapter_model.safetensors` for LoRA or T5 prompt tuning.

  Args:
    params: the full trained tree (frozen base + method parameters), as `model.apply` takes it.
    model: the T5 / BERT module with its method slots bound (LoRA rank and alpha come from them).
    path: the adapter directory (created).
    base_model_name_or_path: recorded in the config (where the base from hf_t5 / hf_bert export lives).
    prompt_id: which prompt of a prompt bank [K, P, d] to write.
  Returns:
    The adapter config written.
  """
  backbone, task, names, modules = _family(model)
  if backbone == "t5" and model.config.scan_layers:
    params = unscan_params(params)
  flat = flatten_params(params)
  lora_paths, prompt_paths = [], []
  for name, leaf in flat.items():
    if name in names:
      continue
    if _LORA.match(name):
      lora_paths.append(name)
    elif is_prompt_bank(name):
      prompt_paths.append(name)
    else:
      raise ValueError(f"export_hf_peft: parameter {name} {tuple(np.shape(leaf))} is neither the base model's "
                       "nor LoRA ('.../lora_<target>/{a,b}') nor prompt tuning ('.../prompt/prompt'), the two "
                       "methods with an exact HF PEFT form")
  if bool(lora_paths) == bool(prompt_paths):
    found = f"both LoRA ({lora_paths[0]}) and a prompt ({prompt_paths[0]})" if lora_paths else "only base weights"
    raise ValueError(f"export_hf_peft: params hold {found}; one HF PEFT adapter is LoRA or prompt tuning")
  method_config, tensors = (_lora(params, lora_paths, model, backbone, names, modules) if lora_paths
                            else _prompt(params, model, backbone, prompt_id))
  config = {**method_config, "task_type": task, "base_model_name_or_path": base_model_name_or_path,
            "inference_mode": True}
  _write_adapter(path, config, tensors)
  return config


def _write_adapter(path: str, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
  """Each file through a temporary name and an atomic rename: a crash never leaves half an adapter."""
  os.makedirs(path, exist_ok=True)
  tmp = os.path.join(path, f".{ADAPTER_WEIGHTS}.tmp")
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata={"format": "pt"})
  os.replace(tmp, os.path.join(path, ADAPTER_WEIGHTS))
  tmp = os.path.join(path, f".{ADAPTER_CONFIG}.tmp")
  with open(tmp, "w") as f:
    json.dump(config, f, indent=2)
  os.replace(tmp, os.path.join(path, ADAPTER_CONFIG))
