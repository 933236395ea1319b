"""Optimizers of the trainable partition, with each method's defaults from its paper or code.

Every optimizer here only ever sees the trainable partition (`peft.trainable.split(params, mask)[0]`, see
train/train_step.py), so frozen leaves carry no optimizer state by construction. The functions are plain,
for gin to bind (t5x's macro name):
  OPTIMIZER = @optimizers.prompt_tuning_optimizer()
  optimizers.fl_tuning_optimizer.learning_rate = @optimizers.linear_decay()
  optimizers.linear_decay.peak_value = 1e-4
  optimizers.linear_decay.total_steps = %TRAIN_STEPS

Defaults (docs/METHODS.md §(5) of each method):
  prompt tuning      Adafactor, constant lr 0.3, decay 0.8, no parameter scaling, update clip 1.0, wd 1e-5
  full FT, T5        t5x's Adafactor fine-tuning: constant lr 1e-3, decay 0.8, parameter scaling on
  full FT / BitFit, BERT  AdamW lr 2e-5 / 1e-4, wd 0.01 without norms and biases (BERT / BitFit papers)
  FL-tuning          bert4keras Adam (eps 1e-6) + decoupled wd 0.01 (`w -= lr*wd*w`) without names
                     containing Norm or bias; linear decay to 0 (bind `linear_decay`)
  adapters/LoRA/prefix/MAM  AdamW lr 1e-4, betas (0.9, 0.98), eps 1e-6, wd 0.1 without norms and biases,
                     global-norm clip 1.0, 6% warmup then linear decay (He et al. GLUE script)
  GPC                AdamW, prompt lr 1e-2 and cell lr 1e-3 (the §C(5) sweep's low ends), wd 0
  PASTA              AdamW lr 2.5e-4, eps 1e-6, wd 0, linear decay (GLUE scripts)
"""
import re
from typing import Any, Callable, Optional, Sequence, Union

import optax

from prompt_tuning_jax.peft import trainable

LearningRate = Union[float, optax.Schedule]
NO_DECAY_PATTERNS: tuple[str, ...] = (r"(?i)norm", r"(^|/|_)bias$")
"""Leaves left out of weight decay: norms and biases (HF Trainer, bert4keras' `Norm`/`bias` rule), named biases
such as GPC's `forget_bias` included."""
HEAD_PATTERNS: tuple[str, ...] = (r"(^|/)classifier/", r"(^|/)pooler/")
"""The BERT head: the classifier, and the pooler when a run trains it (`with_head`)."""


def build_optimizer(inner: optax.GradientTransformation, max_grad_norm: Optional[float] = None
                    ) -> optax.GradientTransformation:
  """The optimizer of the trainable partition: `inner`, after optional global-norm gradient clipping.

  Args:
    inner: e.g. `prompt_tuning_optimizer()`; it will be given the trainable partition only.
    max_grad_norm: clip the gradient's global norm (over trainable leaves) to this; None = no clipping.
  """
  if max_grad_norm is None:
    return inner
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), inner)


def gin_optimizer() -> optax.GradientTransformation:
  """The run's optimizer: the gin `OPTIMIZER` macro, which every method file binds (the functions below are each
  method's); a one-line error when none is bound. A `HEAD_OPTIMIZER` macro (not None) gives the BERT head its
  own (with_head; gin/results/run.gin)."""
  # NOTE: imported here, not at the top: the benchmark imports this module and runs without gin installed.
  from prompt_tuning_jax import gin_utils  # pylint: disable=import-outside-toplevel
  optimizer = gin_utils.configured_macro("OPTIMIZER", default=None)
  if optimizer is None:
    raise ValueError("the gin macro OPTIMIZER is not bound: the method's gin file binds it (each of gin/methods/"
                     "*.gin does, e.g. methods/prompt_tuning.gin: OPTIMIZER = @optimizers.prompt_tuning_optimizer()"
                     "); bind it in yours (train/optimizers.py lists each method's)")
  head = gin_utils.configured_macro("HEAD_OPTIMIZER", default=None)
  return with_head(optimizer, head) if head is not None else build_optimizer(optimizer)


def linear_decay(peak_value: float, total_steps: int, warmup_steps: int = 0,
                 warmup_fraction: float = 0.0) -> optax.Schedule:
  """Linear warmup from 0 (`warmup_steps`, or `warmup_fraction` of `total_steps`), then linear decay to 0."""
  warmup = warmup_steps or int(round(warmup_fraction * total_steps))
  if not 0 <= warmup < total_steps:
    raise ValueError(f"warmup of {warmup} steps must be shorter than total_steps={total_steps}")
  decay = optax.linear_schedule(peak_value, 0.0, total_steps - warmup)
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak_value, warmup), decay], [warmup])


def decay_mask(exclude: Sequence[str] = NO_DECAY_PATTERNS) -> Callable[[Any], Any]:
  """A weight-decay mask function for optax: True for leaves whose path matches none of `exclude`."""
  compiled = [re.compile(p) for p in exclude]

  return lambda params: trainable.map_paths(lambda path: not any(p.search(path) for p in compiled), params)


def with_head(inner: optax.GradientTransformation, head: optax.GradientTransformation,
              patterns: Sequence[str] = HEAD_PATTERNS) -> optax.GradientTransformation:
  """`head` for the trainable leaves whose path matches `patterns` (the BERT head), `inner` for the rest.

  A head learning rate of its own: e.g. inner = the method's optimizer, head = `adamw` at a larger rate, so a
  head on frozen features learns within the method's budget (docs/RESULTS.md). gin:
    OPTIMIZER = @optimizers.with_head()
    optimizers.with_head.inner = @optimizers.unified_optimizer()
    optimizers.with_head.head = @head/optimizers.adamw()
  """
  compiled = [re.compile(p) for p in patterns]
  labels = lambda params: trainable.map_paths(
      lambda path: "head" if any(p.search(path) for p in compiled) else "inner", params)
  return optax.multi_transform({"head": head, "inner": inner}, labels)


def prompt_tuning_optimizer(learning_rate: LearningRate = 0.3, decay_rate: float = 0.8,
                            weight_decay_rate: float = 1e-5, clipping_threshold: float = 1.0
                            ) -> optax.GradientTransformation:
  """Lester et al.'s Adafactor (METHODS §A(5)); optax, like t5x, adds the decay after the LR scaling."""
  return optax.adafactor(learning_rate=learning_rate, decay_rate=decay_rate, multiply_by_parameter_scale=False,
                         clipping_threshold=clipping_threshold, weight_decay_rate=weight_decay_rate)


def t5_finetune_optimizer(learning_rate: LearningRate = 1e-3, decay_rate: float = 0.8
                          ) -> optax.GradientTransformation:
  """t5x's fine-tuning Adafactor (full fine-tuning / BitFit of T5): parameter scaling on, no decay."""
  return optax.adafactor(learning_rate=learning_rate, decay_rate=decay_rate, multiply_by_parameter_scale=True,
                         clipping_threshold=1.0)


def adamw(learning_rate: LearningRate = 2e-5, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
          weight_decay: float = 0.01, no_decay: Sequence[str] = NO_DECAY_PATTERNS
          ) -> optax.GradientTransformation:
  """AdamW with decoupled weight decay (`w -= lr*wd*w`) on leaves not matching `no_decay`.

  The defaults are BERT fine-tuning's (HF Trainer); the method functions below change them.
  """
  return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                     mask=decay_mask(no_decay) if weight_decay else None)


def bitfit_optimizer(learning_rate: LearningRate = 1e-4) -> optax.GradientTransformation:
  """BitFit on BERT (Ben Zaken et al.: lr in 1e-4..1e-3): AdamW; biases carry no decay anyway."""
  return adamw(learning_rate)


def fl_tuning_optimizer(learning_rate: LearningRate = 1e-4, weight_decay: float = 0.01
                        ) -> optax.GradientTransformation:
  """FL-tuning's bert4keras Adam + weight decay (METHODS §B(5)): eps 1e-6, bias correction on.

  NOTE: bert4keras applies `w -= lr*wd*w` outside Adam, exactly optax's decoupled AdamW.
  """
  return adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-6, weight_decay=weight_decay)


def unified_optimizer(learning_rate: LearningRate = 1e-4, weight_decay: float = 0.1
                      ) -> optax.GradientTransformation:
  """He et al.'s GLUE setting for adapters, LoRA, prefix tuning and MAM (METHODS §D(5)).

  Pair it with `build_optimizer(..., max_grad_norm=1.0)` and `linear_decay(warmup_fraction=0.06)`.
  """
  return adamw(learning_rate, b1=0.9, b2=0.98, eps=1e-6, weight_decay=weight_decay)


def pasta_optimizer(learning_rate: LearningRate = 2.5e-4) -> optax.GradientTransformation:
  """PASTA's transformers.AdamW (METHODS §E(5)): eps 1e-6, no weight decay (lr 3e-3 for CoNLL03)."""
  return adamw(learning_rate, eps=1e-6, weight_decay=0.0)


def gpc_optimizer(prompt_learning_rate: LearningRate = 1e-2, cell_learning_rate: LearningRate = 1e-3,
                  weight_decay: float = 0.0) -> optax.GradientTransformation:
  """GPC (reconstructed; METHODS §C(5)): AdamW with one lr for the `prompt` and another for the rest."""
  labels = lambda params: trainable.map_paths(
      lambda path: "prompt" if trainable.module_name(path) == "prompt" else "cell", params)
  return optax.multi_transform({"prompt": adamw(prompt_learning_rate, weight_decay=weight_decay),
                                "cell": adamw(cell_learning_rate, weight_decay=weight_decay)}, labels)
