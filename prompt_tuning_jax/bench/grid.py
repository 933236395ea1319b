"""What the benchmark runs: model presets, method setups (slots + trainable mask) and rows.

Methods are built directly from the peft/*.py factories with the defaults of gin/methods/*.gin (no gin
here: GPU machines lack it); tests/bench/test_grid.py builds both and checks that every module the slots
make has the same hyperparameters and that the trainable masks agree. Prompt banks use the RandomUniform
init (table-based inits only change the values, not the cost). Weights are random, as the issue's reference
table.
"""
import dataclasses
import functools
import json
from typing import Any, Callable, Optional

from prompt_tuning_jax import minilm
from prompt_tuning_jax.models import bert_config, t5_config
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.peft import adapters, fl_tuning, gpc, lora, pasta, prefix, prompt_init, prompts
from prompt_tuning_jax.peft import trainable


@dataclasses.dataclass(frozen=True)
class Options:
  """How every row runs.

  Attributes:
    dtype: activation dtype, 'float32' or 'bfloat16'; parameters stay float32.
    frozen_dtype: the frozen kernels and tables are cast to it once, before the first step (ours.CAST_ONCE);
      None keeps them float32.
    scan_layers: scan T5's stacks over their layers (with remat).
    dropout: dropout rate on both sides; 0 turns it off.
    steps / warmup: timed steps (median reported) after untimed warm-up steps.
    peft: also run the HF PEFT side.
  """
  dtype: str = "float32"
  frozen_dtype: Optional[str] = None
  scan_layers: bool = False
  dropout: float = 0.0
  steps: int = 5
  warmup: int = 2
  peft: bool = True


@dataclasses.dataclass(frozen=True)
class Row:
  """One benchmark setting.

  Attributes:
    model / method: names in MODELS and METHODS.
    batch, input_length, target_length: inputs [batch, input_length]; T5 targets [batch, target_length]
      (BERT predicts a label: 0 target tokens).
    prompt_length: P rows the prompt methods add inside the encoder ([b, P + input_length, d]).
    lora_rank / lora_alpha: LoRA's r and alpha (scale alpha / r).
    num_prompts: K, the prompt bank size (ensemble mode).
  """
  model: str
  method: str
  batch: int
  input_length: int
  target_length: int = 0
  prompt_length: int = 100
  lora_rank: int = 8
  lora_alpha: float = 16.0
  num_prompts: int = 1


# Bench-only sizes: small enough for a CPU test, with enough depth and width that matmuls dominate.
TINY = {
    "t5_tiny": t5_config.T5Config(vocab_size=512, embed_dim=256, num_heads=4, head_dim=64, mlp_dim=512,
                                  num_encoder_layers=4, num_decoder_layers=2),
    "bert_tiny": bert_config.BertConfig(vocab_size=512, embed_dim=256, num_heads=4, head_dim=64, mlp_dim=512,
                                        num_layers=4, max_position_embeddings=256),
}
MODELS = sorted(t5_config.PRESETS) + sorted(bert_config.PRESETS) + ["minilm"] + sorted(TINY)


def model_config(name: str, dtype: str, scan_layers: bool, dropout: float) -> Any:
  """A T5Config or BertConfig for `name` (MODELS) with the run's activation dtype and dropout."""
  if name in t5_config.PRESETS or name == "t5_tiny":
    base = TINY[name] if name in TINY else t5_config.preset(name)
    return base.replace(dtype=dtype, scan_layers=scan_layers, dropout_rate=dropout)
  overrides = dict(dtype=dtype, dropout_rate=dropout, attention_dropout_rate=dropout)
  if name == "minilm":
    with open(minilm.minilm_file("config.json")) as f:  # prompt_tuning_jax/minilm.py: seqio-free
      return bert_config.bert_config_from_hf(json.load(f), num_labels=2, **overrides)
  if name in TINY:
    return TINY[name].replace(**overrides)
  if name in bert_config.PRESETS:
    return bert_config.preset(name, **overrides)
  raise ValueError(f"unknown model {name!r}; known: {MODELS}")


def is_t5(config: Any) -> bool:
  return isinstance(config, t5_config.T5Config)


@dataclasses.dataclass(frozen=True)
class Method:
  """A method as the benchmark builds it.

  Attributes:
    slots: row -> Slots (the factories of its gin files with their defaults; the row's prompt_length,
      lora_rank and lora_alpha where the gin files have the macros PROMPT_LENGTH, LORA_RANK, LORA_ALPHA).
    patterns / train_all: the trainable mask (peft/trainable.py), as the method's gin file binds it.
    gin_files: the gin/methods files it mirrors (tests/bench/test_grid.py); () = ('methods/<name>.gin',).
    peft: the equivalent HF PEFT setup ('prompt_tuning', 'lora', 'prefix_tuning', 'none' = plain model,
      'bitfit' = plain model with the same trainable patterns), or None when PEFT has none.
    needs_unscanned_t5: the method's hook runs between layers (T5 needs scan_layers=False).
  """
  slots: Callable[[Row], Slots]
  patterns: tuple[str, ...] = trainable.DEFAULT_TRAINABLE_PATTERNS
  train_all: bool = False
  peft: Optional[str] = None
  needs_unscanned_t5: bool = False
  gin_files: tuple[str, ...] = ()


def _prompt(row: Row) -> Callable[..., Any]:
  return functools.partial(prompts.prompt_factory, prompt_length=row.prompt_length,
                           initializer=prompt_init.RandomUniform(), num_prompts=row.num_prompts)


def _lora(rank: int, alpha: float, targets: tuple[str, ...]) -> Callable[..., Any]:
  return functools.partial(lora.lora_factory, rank=rank, alpha=alpha, targets=targets)


def _adapter(bottleneck_dim: int, insertion: str, init: str = "bert", **kwargs) -> Callable[..., Any]:
  return functools.partial(adapters.adapter_factory, bottleneck_dim=bottleneck_dim, insertion=insertion,
                           init=init, **kwargs)


def _head_adapter(multi_head: bool) -> Callable[..., Any]:
  return functools.partial(adapters.head_adapter_factory, bottleneck_dim=30, multi_head=multi_head, init="bert")


_PREFIX = functools.partial(prefix.prefix_factory, length=30, reparameterize=True, gated=True)
_PROMPT_GIN = "methods/prompt_tuning_random.gin"  # the init the benchmark's prompts use
BITFIT_PATTERNS = (r"(^|/)bias$", r"(^|/)classifier/", r"(^|/)(pre_\w*layer_norm|encoder_norm|decoder_norm)/scale$")

METHODS: dict[str, Method] = {
    "prompt_tuning": Method(lambda r: Slots(input_transform=_prompt(r)), peft="prompt_tuning",
                            gin_files=(_PROMPT_GIN,)),
    "full_finetuning": Method(lambda r: Slots(), train_all=True, peft="none"),
    # Every weight of the prompt model trains: full fine-tuning at prompt tuning's encoder shapes.
    "full_finetuning_with_prompt": Method(lambda r: Slots(input_transform=_prompt(r)), train_all=True,
                                          gin_files=(_PROMPT_GIN, "methods/full_finetuning.gin")),
    "bitfit": Method(lambda r: Slots(), patterns=BITFIT_PATTERNS, peft="bitfit"),
    "lora": Method(lambda r: Slots(projection_delta=_lora(r.lora_rank, r.lora_alpha, ("query", "value"))),
                   peft="lora"),
    "lora_ffn": Method(lambda r: Slots(projection_delta=_lora(102, 408.0, ("wi", "wi_0", "wi_1", "wo")))),
    "prefix_tuning": Method(lambda r: Slots(attention_kv_prefix=_PREFIX), peft="prefix_tuning"),
    "parallel_adapter": Method(lambda r: Slots(post_mlp_adapter=_adapter(200, "parallel"))),
    "scaled_parallel_adapter": Method(
        lambda r: Slots(post_mlp_adapter=_adapter(512, "parallel", "lora", scale=4.0))),
    "sequential_adapter": Method(lambda r: Slots(
        post_attention_adapter=_adapter(200, "sequential", input_norm=True),
        post_mlp_adapter=_adapter(200, "sequential"))),
    "sequential_adapter_pfeiffer": Method(lambda r: Slots(post_mlp_adapter=_adapter(600, "pfeiffer"))),
    "parallel_adapter_attention": Method(lambda r: Slots(attention_head_adapter=_head_adapter(False))),
    "multihead_parallel_adapter": Method(lambda r: Slots(attention_head_adapter=_head_adapter(True))),
    "mam": Method(lambda r: Slots(attention_kv_prefix=_PREFIX,
                                  post_mlp_adapter=_adapter(512, "parallel", "lora", scale=4.0))),
    "fl_tuning": Method(lambda r: Slots(mlp_extra=functools.partial(fl_tuning.fl_units_factory, num_units=160))),
    "pasta": Method(lambda r: Slots(layer_input_hook=pasta.pasta_factory), needs_unscanned_t5=True),
    "gpc": Method(lambda r: Slots(input_transform=_prompt(r), layer_input_hook=functools.partial(
        gpc.gpc_factory, prompt_length=r.prompt_length)), needs_unscanned_t5=True),
}
PROMPT_METHODS = ("prompt_tuning", "full_finetuning_with_prompt", "gpc")
"""Methods whose encoder sees prompt_length extra rows."""

# The issue's rows (issue 5): CPU ones run on 2 cores, GPU ones at batch 32, 512 + 16 tokens, P = 100.
ISSUE_GRIDS: dict[str, tuple[Row, ...]] = {
    "issue_cpu": (
        Row("minilm", "prompt_tuning", 32, 128, 0, prompt_length=20),
        Row("minilm", "full_finetuning", 32, 128, 0, prompt_length=20),
        Row("minilm", "lora", 32, 128, 0, prompt_length=20),
        Row("t5_1_1_small", "prompt_tuning", 16, 256, 8, prompt_length=100),
    ),
    "issue_gpu": tuple(Row(model, method, 32, 512, 16, prompt_length=100)
                       for model in ("t5_1_1_base", "t5_1_1_large")
                       for method in ("prompt_tuning", "full_finetuning", "lora")),
    "issue_xxl": (Row("t5_1_1_xxl", "prompt_tuning", 32, 512, 16, prompt_length=100),),
}
