"""Training trajectories of tiny models equal HF PEFT's / PyTorch references' (issue #15, part 1).

Each case starts both sides from the same weights (our init, exported through checkpoints/), trains STEPS=10
AdamW steps on the same batches (two fixed batches, alternated so that the loss falls), float32 on CPU, dropout
off on both sides (our rng None; torch eval mode, gradients on). Ours: the method's gin/methods file (slots,
trainable patterns, OPTIMIZER) with a linear_decay schedule bound as gin/results files do, and the project's
train step (experiments/trajectories.py, `build_ours` / `train_ours`). Theirs: peft (LoRA, prompt and prefix
tuning), plain transformers (full fine-tuning, BitFit) or hand-written torch modules on transformers' BERT
(adapters, FL-tuning, PASTA, prompt tuning + the Global Prompt Cell (GPC): peft lacks them), with
torch.optim.AdamW + get_linear_schedule_with_warmup (+ clip_grad_norm_) set from trajectories.TORCH_SETTINGS,
which never reads our optimizer (one param group per learning rate where the method has two: GPC). Asserted
per case:
  per-step losses        |ours - theirs| / |theirs| <= LOSS_RTOL (1e-5)
  final trained tensors  max|ours - theirs| / max(max|theirs|, lr) <= PARAM_RTOL (1e-4) per tensor
  parameter updates      the same on (final - initial) <= UPDATE_RTOL (1e-3): the start cannot hide them
and that the run means something: the loss moved by > 1%, every trained tensor moved, the method acted (the
reference's loss with the method off differs by > 0.1%), the sides train the same tensors and scalar counts
and decay the same ones; in lora_t5 every gradient norm exceeds the clip, so the clipping is compared too.
Cases marked float64 also run the reference in float64: ours must be as close to it as torch's float32 run
(losses within LOSS_RTOL, updates within 10x torch's distance).
BERT's key biases are left out of the tensor metrics (trajectories.NULL_GRADIENT: their exact gradient is 0)
and only checked to drift less than 5% of one step. Tiny BERTs get frozen kernels of std 1/sqrt(d)
(`rescale_bert`), else their sublayers, and so prefixes and adapters, barely act.

Where our math and peft's differ, the matching form is tested:
  - prefix tuning, BERT: peft gives the tokens positions p..p+l-1 (it offsets position_ids by the prefix
    length, and BertEmbeddings starts at the cache length), ours 0..l-1 (prefixes are keys and values only):
    the reference passes position_ids = arange(l) - p, which peft shifts back. peft's MLP reparameterisation
    is one network emitting every layer's prefixes, ours one network per layer: the MLP case has one layer,
    the direct prefixes (peft prefix_projection=False) run on two.
  - prefix tuning, T5: not tested. peft hands past_key_values to T5's decoder only: no encoder prefixes, the
    cross-attention cache is reset (no cross-attention prefixes), and the decoder's prefix columns get
    relative position bias; ours prefixes every attention with zero-bias columns.
  - prompt tuning: our T5 'prefix' placement is peft's; BERT prompt tuning has no peft form (peft_export.py).
  - full fine-tuning of T5: hf_t5.to_transformers leaves encoder/decoder.embed_tokens as untied copies of the
    shared table (exact for a forward pass, three tables in training); the reference re-ties them.
  - optimizers: Adafactor (prompt tuning's and T5 full fine-tuning's) has no torch twin: those cases run AdamW.
"""
import dataclasses
import itertools
import time
from typing import Callable

import numpy as np
import pytest
import torch

from prompt_tuning_jax.checkpoints import hf_bert
from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning_jax.experiments import trajectories
from prompt_tuning_jax.models import bert_config, inputs
from prompt_tuning_jax.models.t5 import shift_right

STEPS = 10
LOSS_RTOL, PARAM_RTOL, UPDATE_RTOL = 1e-5, 1e-4, 1e-3
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def bert(num_layers=2):
  return ["models/bert_base.gin"], [
      "bert_config.preset.vocab_size = 128", "bert_config.preset.embed_dim = 32", "bert_config.preset.num_heads = 4",
      "bert_config.preset.head_dim = 8", "bert_config.preset.mlp_dim = 64",
      f"bert_config.preset.num_layers = {num_layers}", "bert_config.preset.max_position_embeddings = 16",
      "NUM_LABELS = 3"]


def t5():
  return ["models/t5_1_1_small.gin"], [
      "t5_config.preset.vocab_size = 64", "t5_config.preset.embed_dim = 32", "t5_config.preset.num_heads = 4",
      "t5_config.preset.head_dim = 8", "t5_config.preset.mlp_dim = 64", "t5_config.preset.num_encoder_layers = 2",
      "t5_config.preset.num_decoder_layers = 1"]


def bert_batches(model):
  """Two fixed batches [4, 10] (the last example padded from position 5), alternated for STEPS steps."""
  fixed = [inputs.example_batch(model, batch_size=4, length=10, seed=seed) for seed in range(2)]
  return list(itertools.islice(itertools.cycle(fixed), STEPS))


def t5_batches(model):
  """Two fixed batches (inputs [4, 8], targets [4, 5], the last example's target padded after 3 tokens)."""
  fixed = []
  for seed in range(2):
    batch = inputs.example_batch(model, batch_size=4, length=8, target_length=5, seed=seed)
    targets = batch["decoder_target_tokens"].copy()
    targets[-1, 2], targets[-1, 3:] = inputs.T5_EOS_ID, 0
    fixed.append({**batch, "decoder_target_tokens": targets, "decoder_input_tokens": np.asarray(shift_right(targets)),
                  "decoder_loss_weights": (targets > 0).astype(np.float32)})
  return list(itertools.islice(itertools.cycle(fixed), STEPS))


Method = trajectories.Method
ADAMW = "OPTIMIZER = @optimizers.adamw()"
PREFIX_LENGTH, PREFIX_HIDDEN, ADAPTER_DIM, FL_UNITS, PROMPT_LENGTH = 4, 16, 8, 16, 3
PREFIX = ("from prompt_tuning_jax.peft import prefix", f"PREFIX_LENGTH = {PREFIX_LENGTH}")


def unified(gin_file, *bindings):
  """A method on He et al.'s AdamW (results/unified_optimizer.gin: clip 1.0), 2 warmup steps, lr 1e-2."""
  return Method(gin_file, "unified_optimizer", 1e-2, warmup_fraction=0.2, max_grad_norm=1.0, bindings=bindings)


@dataclasses.dataclass(frozen=True)
class Case:
  """backbone: (gin files, bindings); side: (ours, tmp dir) -> TorchSide; batches: model -> STEPS batches;
  clipped: every step's gradient norm exceeds method.max_grad_norm (so the clipping itself is compared);
  float64: also run the reference in float64 and check that ours is as close to it as torch's float32 run."""
  backbone: tuple[list[str], list[str]]
  method: Method
  side: Callable[..., trajectories.TorchSide]
  batches: Callable[..., list]
  clipped: bool = False
  float64: bool = False


def plain(trains):
  return lambda ours, _: trajectories.plain_side(ours, lambda name: bool(trains(name)))


def prefix(hidden_dim):
  return lambda ours, _: trajectories.peft_prefix_side(ours, PREFIX_LENGTH, hidden_dim)


# Learning rates are the methods' own x 10..100 so that 10 steps move the tiny models visibly.
CASES = {
    # LoRA r=8, alpha=16 on q, v (methods/lora.gin); the T5 gradient norms exceed the clip at every step.
    "lora_bert": Case(bert(), unified("methods/lora.gin"), trajectories.peft_adapter_side, bert_batches),
    "lora_t5": Case(t5(), unified("methods/lora.gin"), trajectories.peft_adapter_side, t5_batches, clipped=True,
                    float64=True),
    # Full fine-tuning: BERT's AdamW with a 10% warmup (full_finetuning.gin's Adafactor on T5 has no twin).
    "full_finetuning_bert": Case(bert(), Method("methods/full_finetuning.gin", "adamw", 1e-3, 0.1, bindings=(ADAMW,)),
                                 plain(lambda name: True), bert_batches, float64=True),
    "full_finetuning_t5": Case(t5(), Method("methods/full_finetuning.gin", "adamw", 1e-3, 0.1, bindings=(ADAMW,)),
                               plain(lambda name: True), t5_batches),
    # BitFit: every bias + the classifier (methods/bitfit.gin), against requires_grad by torch name; no warmup.
    "bitfit_bert": Case(bert(), Method("methods/bitfit.gin", "bitfit_optimizer", 1e-2),
                        plain(trajectories.BITFIT_TORCH.search), bert_batches),
    # Prompt tuning, P=4, U[-0.5, 0.5] init, T5 'prefix' placement = peft's; AdamW (its Adafactor has no twin).
    "prompt_tuning_t5": Case(t5(), Method("methods/prompt_tuning_random.gin", "adamw", 1e-2, 0.3,
                                          bindings=(ADAMW, "PROMPT_LENGTH = 4")),
                             trajectories.peft_adapter_side, t5_batches),
    # Prefix tuning (gated), BERT, peft's positions offset back (module docstring). Direct prefixes on 2 layers
    # (peft prefix_projection=False); the MLP reparameterisation on 1 layer (one network either way).
    "prefix_direct_bert": Case(bert(), unified("methods/prefix_tuning.gin", *PREFIX,
                                               "prefix.prefix_factory.reparameterize = False"),
                               prefix(None), bert_batches, float64=True),
    "prefix_mlp_bert": Case(bert(num_layers=1), unified("methods/prefix_tuning.gin", *PREFIX,
                                                        f"prefix.prefix_factory.hidden_dim = {PREFIX_HIDDEN}"),
                            prefix(PREFIX_HIDDEN), bert_batches),
}


# ---------------------------------------------------------------------------------------------------------
# Methods peft lacks: hand-written torch references on transformers' BertForSequenceClassification, each the
# math of its peft/ module's docstring. The added torch modules name their parts as ours (down, up, input_norm,
# wi, wo, special_token_embedding), so `reference_side` maps them: Linear weight [out, in] <-> kernel [in, out].


class Bottleneck(torch.nn.Module):
  """An adapter A(z) = up(ReLU(down(N(z)))) (peft/adapters.py, dropout off); N = LayerNorm(eps 1e-5) or none.
  `reads`: 'output' (sequential: z = F, the sublayer output) or 'input' (parallel: z = x, the sublayer input)."""

  def __init__(self, embed_dim, bottleneck_dim, reads, input_norm=False):
    super().__init__()
    self.reads = reads
    self.input_norm = torch.nn.LayerNorm(embed_dim, eps=1e-5) if input_norm else None
    self.down = torch.nn.Linear(embed_dim, bottleneck_dim)
    self.up = torch.nn.Linear(bottleneck_dim, embed_dim)

  def forward(self, x, f):
    z = f if self.reads == "output" else x
    z = z if self.input_norm is None else self.input_norm(z)
    return self.up(torch.relu(self.down(z)))


class FLUnits(torch.nn.Module):
  """FL-tuning's k extra FFN units on BERT (peft/fl_tuning.py): U(x) = GELU(x W1' + b1') W2' + b2', x = FFN input."""

  def __init__(self, embed_dim, num_units):
    super().__init__()
    self.wi = torch.nn.Linear(embed_dim, num_units)
    self.wo = torch.nn.Linear(num_units, embed_dim)

  def forward(self, x, f):
    del f
    return self.wo(torch.nn.functional.gelu(self.wi(x)))  # BERT's 'gelu' is the exact erf form


class SublayerOutput(torch.nn.Module):
  """HF's BertSelfOutput / BertOutput, LN(x + Drop(dense(h))), with `extra(x, F)` added inside the dropout
  (attention adapters, FL units: the official code adds them to the sublayer output) or after it (FFN
  adapters: slots.ADAPTERS_AFTER_DROPOUT)."""

  def __init__(self, inner, extra, inside_dropout):
    super().__init__()
    self.inner, self.extra, self.inside_dropout = inner, extra, inside_dropout

  def forward(self, hidden_states, input_tensor):
    f = self.inner.dense(hidden_states)
    if self.inside_dropout:
      f = self.inner.dropout(f + self.extra(input_tensor, f))
    else:
      f = self.inner.dropout(f)
      f = f + self.extra(input_tensor, f)
    return self.inner.LayerNorm(f + input_tensor)


class Pasta(torch.nn.Module):
  """PASTA (peft/pasta.py): before encoder layer l, h[b, t] += E[l, j] where t holds row b's j-th special token
  ([CLS] or [SEP], counted in order over the unpadded positions; j >= n_s gets nothing)."""

  def __init__(self, num_layers, num_special_tokens, embed_dim, special_ids=(101, 102)):
    super().__init__()
    self.special_token_embedding = torch.nn.Parameter(torch.zeros(num_layers, num_special_tokens, embed_dim))
    self.special_ids, self.slots = special_ids, None

  def set_batch(self, input_ids, attention_mask):
    slots = np.full(input_ids.shape, -1)
    for b, t in itertools.product(*map(range, input_ids.shape)):
      if attention_mask[b, t] and input_ids[b, t] in self.special_ids:
        slots[b, t] = (slots[b, :t] >= 0).sum()
    slots[slots >= self.special_token_embedding.shape[1]] = -1
    self.slots = torch.from_numpy(slots)

  def hook(self, layer):
    def add(module, args, kwargs):
      del module
      delta = self.special_token_embedding[layer][self.slots.clamp(min=0)] * (self.slots >= 0)[..., None]
      return (args[0] + delta,) + args[1:], kwargs
    return add


class GlobalPromptCell(torch.nn.Module):
  """Prompt tuning + GPC on BERT (peft/prompts.py, peft/gpc.py's reconstructed cell with gin/methods/gpc.gin's
  defaults: two shared gates, max_gate_sum=1, no input norm on BERT, combine='replace').

  The prompt P [1, m, d] joins the LayerNorm-ed embeddings after [CLS] (no position embedding); before layer
  l >= 1 the prompt rows H_P become C^l = F ⊙ C^{l-1} + R ⊙ H_P, with F = σ([H_P ; C] W_f + b_f),
  R = σ([H_P ; C] W_r + b_r), both divided by max(1, F + R); C^0 = P.
  """

  def __init__(self, embed_dim, prompt_length):
    super().__init__()
    self.prompt = torch.nn.Module()
    self.prompt.prompt = torch.nn.Parameter(torch.zeros(1, prompt_length, embed_dim))
    self.cell = torch.nn.Module()
    for gate in ("forget", "remember"):
      setattr(self.cell, f"{gate}_kernel", torch.nn.Parameter(torch.zeros(2 * embed_dim, embed_dim)))
      setattr(self.cell, f"{gate}_bias", torch.nn.Parameter(torch.zeros(embed_dim)))

  def insert(self, embedded, mask):
    """[b, l, d], [b, l] -> [b, m+l, d], [b, m+l]: the prompt after row 0, real in the mask."""
    batch, m = embedded.shape[0], self.prompt.prompt.shape[1]
    prompt = self.prompt.prompt.expand(batch, -1, -1).to(embedded.dtype)
    ones = torch.ones(batch, m, dtype=mask.dtype)
    return (torch.cat([embedded[:, :1], prompt, embedded[:, 1:]], 1),
            torch.cat([mask[:, :1], ones, mask[:, 1:]], 1))

  def step(self, h, cell):
    """h [b, m+l, d] entering a layer >= 1, cell C^{l-1} [b, m, d] -> (h with rows 1..m = C^l, C^l)."""
    m = cell.shape[1]
    rows = h[:, 1:1 + m]
    x = torch.cat([rows, cell], -1)
    forget = torch.sigmoid(x @ self.cell.forget_kernel + self.cell.forget_bias)
    remember = torch.sigmoid(x @ self.cell.remember_kernel + self.cell.remember_bias)
    excess = torch.clamp(forget + remember, min=1.0)
    cell = forget / excess * cell + remember / excess * rows
    return torch.cat([h[:, :1], cell, h[:, 1 + m:]], 1), cell


def install_gpc(model, config):
  """GPC on transformers' BERT, layer by layer: embeddings -> prompt -> (cell -> BertLayer) x L -> pooler ->
  classifier -> cross-entropy (HF's head and loss; eager attention, additive key mask)."""
  gpc = GlobalPromptCell(config.embed_dim, PROMPT_LENGTH)
  model.bert.encoder.gpc = gpc

  def loss(batch):
    long = lambda key: torch.from_numpy(np.asarray(batch[key], np.int64))
    embedded = model.bert.embeddings(input_ids=long("input_ids"), token_type_ids=long("token_type_ids"))
    h, mask = gpc.insert(embedded, torch.from_numpy(np.asarray(batch["attention_mask"], np.float32)))
    additive = (1.0 - mask.to(h.dtype))[:, None, None, :] * torch.finfo(h.dtype).min  # [b, 1, 1, m+l]
    cell = h[:, 1:1 + PROMPT_LENGTH]  # C^0 = P
    for i, layer in enumerate(model.bert.encoder.layer):
      if i:
        h, cell = gpc.step(h, cell)
      h = layer(h, attention_mask=additive)
    logits = model.classifier(model.dropout(model.bert.pooler(h)))
    return torch.nn.functional.cross_entropy(logits, long("labels"))
  return {"bert.encoder.gpc.prompt": "bert/prompt", "bert.encoder.gpc.cell": "bert/encoder/gpc/cell"}, loss


def reference_side(ours, install):
  """`install(model, config) -> ({torch module name: our module path}, loss or None)` adds the method to
  transformers' BERT classifier; the added modules and the classifier train (as our default mask)."""
  config = ours.model.config
  model = trajectories.hf_bert_classifier(ours.params, config)
  added, loss = install(model, config)
  names = {}  # torch parameter name -> (our path, transpose)
  for module_name, ours_path in added.items():
    for sub_name, sub in model.get_submodule(module_name).named_modules():
      for leaf, _ in sub.named_parameters(recurse=False):
        torch_name, path = ".".join(filter(None, [module_name, sub_name, leaf])), "/".join(filter(None, [
            ours_path, sub_name.replace(".", "/")]))
        linear, norm = isinstance(sub, torch.nn.Linear), isinstance(sub, torch.nn.LayerNorm)
        names[torch_name] = (f"{path}/{'kernel' if linear else 'scale'}" if leaf == "weight" and (linear or norm)
                             else f"{path}/{leaf}", linear and leaf == "weight")
  head = hf_bert.name_map(config, "sequence_classification", "bert.")
  names.update({head[f"classifier/{leaf}"][0]: (f"classifier/{leaf}", leaf == "kernel") for leaf in ("kernel", "bias")})

  def ours_named(params):
    flat = flatten_params(params)
    return {name: np.asarray(flat[path]).T if transpose else np.asarray(flat[path])
            for name, (path, transpose) in names.items()}

  parameters = dict(model.named_parameters())
  with torch.no_grad():
    for name, parameter in parameters.items():
      parameter.requires_grad_(name in names)
    for name, value in ours_named(ours.params).items():
      parameters[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))
  loss = loss or trajectories.bert_loss(model)
  added_parameters = [p for name, p in parameters.items() if not name.startswith("classifier.")]

  def base_loss(batch):
    """The loss with every added parameter zeroed: each added term is then exactly 0 (the trained head stays)."""
    saved = [p.detach().clone() for p in added_parameters]
    with torch.no_grad():
      for p in added_parameters:
        p.zero_()
      value = loss(batch)
      for p, value_before in zip(added_parameters, saved):
        p.copy_(value_before)
    return value

  return trajectories.TorchSide(model, loss, lambda: trajectories.trainable_state(model), ours_named, base_loss)


def install_adapters(attention, mlp):
  """Adapters on each layer's attention ('sequential' + LayerNorm input, before the dropout) and FFN output."""
  def install(model, config):
    added = {}
    for i, layer in enumerate(model.bert.encoder.layer):
      if attention:
        layer.attention.output = SublayerOutput(layer.attention.output, Bottleneck(
            config.embed_dim, ADAPTER_DIM, "output", input_norm=True), inside_dropout=True)
        added[f"bert.encoder.layer.{i}.attention.output.extra"] = f"bert/encoder/layers_{i}/adapter_attention"
      layer.output = SublayerOutput(layer.output, Bottleneck(config.embed_dim, ADAPTER_DIM, mlp), inside_dropout=False)
      added[f"bert.encoder.layer.{i}.output.extra"] = f"bert/encoder/layers_{i}/adapter_mlp"
    return added, None
  return lambda ours, _: reference_side(ours, install)


def install_fl_units(model, config):
  added = {}
  for i, layer in enumerate(model.bert.encoder.layer):
    layer.output = SublayerOutput(layer.output, FLUnits(config.embed_dim, FL_UNITS), inside_dropout=True)
    added[f"bert.encoder.layer.{i}.output.extra"] = f"bert/encoder/layers_{i}/mlp/fl_units"
  return added, None


def install_pasta(model, config):
  pasta = Pasta(config.num_layers, 3, config.embed_dim)  # n_s = 3: BERT's default (pasta_factory)
  model.bert.encoder.pasta = pasta
  for i, layer in enumerate(model.bert.encoder.layer):
    layer.register_forward_pre_hook(pasta.hook(i), with_kwargs=True)
  loss = trajectories.bert_loss(model)

  def pasta_loss(batch):
    pasta.set_batch(batch["input_ids"], batch["attention_mask"])
    return loss(batch)
  return {"bert.encoder.pasta": "bert/encoder/pasta"}, pasta_loss


def pair_batches(model):
  """bert_batches with a [SEP] at position 4 of rows 0 and 1 (sentence pairs: [CLS] a [SEP] b [SEP]), so PASTA's
  third special-token vector trains too."""
  batches = []
  for batch in bert_batches(model):
    ids = batch["input_ids"].copy()
    ids[:2, 4] = inputs.BERT_SEP_ID
    batches.append({**batch, "input_ids": ids})
  return batches


REFERENCE_CASES = {
    # Houlsby: sequential adapters after attention (LayerNorm input) and FFN (methods/sequential_adapter.gin).
    "sequential_adapter_bert": Case(bert(), unified("methods/sequential_adapter.gin", f"ADAPTER_DIM = {ADAPTER_DIM}"),
                                    install_adapters(attention=True, mlp="output"), bert_batches),
    # He et al.'s parallel adapter on the FFN (methods/parallel_adapter.gin).
    "parallel_adapter_bert": Case(bert(), unified("methods/parallel_adapter.gin", f"ADAPTER_DIM = {ADAPTER_DIM}"),
                                  install_adapters(attention=False, mlp="input"), bert_batches),
    # FL-tuning, k extra FFN units (methods/fl_tuning.gin), bert4keras' Adam + decay.
    "fl_tuning_bert": Case(bert(), Method("methods/fl_tuning.gin", "fl_tuning_optimizer", 1e-2,
                                          bindings=(f"FL_UNITS = {FL_UNITS}",)),
                           lambda ours, _: reference_side(ours, install_fl_units), bert_batches),
    # PASTA, n_s = 3 vectors per layer (methods/pasta.gin), on sentence-pair batches; no decay.
    "pasta_bert": Case(bert(), Method("methods/pasta.gin", "pasta_optimizer", 1e-2),
                       lambda ours, _: reference_side(ours, install_pasta), pair_batches, float64=True),
    # Prompt tuning (m = 3, U[-0.5, 0.5] init) + the Global Prompt Cell (methods/gpc.gin) on 3 layers (the cell
    # runs twice); gpc_optimizer's two learning rates, prompt 1e-1 and cell + head 1e-2, as two torch groups,
    # 2 warmup steps; no decay (so the decay masks go unchecked: ours would decay the gates' `*_bias`).
    "gpc_bert": Case(bert(num_layers=3), Method(
        "methods/gpc.gin", "gpc_optimizer", 1e-2, 0.2, learning_rate_argument="cell_learning_rate",
        group_learning_rates=(("prompt_learning_rate", r"\.prompt\.prompt$", 1e-1),),
        bindings=("from prompt_tuning_jax.peft import prompt_init", f"PROMPT_LENGTH = {PROMPT_LENGTH}",
                  "PROMPT_INIT = @prompt_init.RandomUniform()")),
                     lambda ours, _: reference_side(ours, install_gpc), bert_batches),
}
CASES.update(REFERENCE_CASES)


def rescale_bert(ours):
  """Frozen BERT kernels N(0, 0.02) -> N(0, 1/d) (x 1/(0.02 sqrt(d))): BERT-base's std leaves a d=32 model's
  sublayers (and so prefixes and adapters) nearly idle against the residual stream."""
  config = ours.model.config
  if not isinstance(config, bert_config.BertConfig):
    return
  factor = 1.0 / (0.02 * np.sqrt(config.embed_dim))
  names = hf_bert.name_map(config, "sequence_classification", "bert.")
  flat = flatten_params(ours.params)
  ours.params = unflatten_params({p: v * factor if p in names and p.startswith("bert/") and p.endswith("/kernel")
                                  else v for p, v in flat.items()})


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
  """Tiny torch steps run ~50x faster on one thread than on two contended ones."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_trajectory_matches_torch(name, tmp_path):
  case = CASES[name]
  start = time.perf_counter()
  ours, adamw = trajectories.build_ours(*case.backbone, case.method, STEPS, compiler_options=FAST_COMPILE)
  rescale_bert(ours)
  exact = case.side(ours, str(tmp_path / "float64")) if case.float64 else None
  result = trajectories.compare_trajectories(ours, case.side(ours, str(tmp_path)), case.batches(ours.model), adamw,
                                             FAST_COMPILE, exact)
  print(f"{name}: {time.perf_counter() - start:.1f}s, null-gradient drift {result['null_gradient_moved']:.1e} lr, "
        f"loss rel {result['loss_rel']:.1e}, param rel "
        f"{result['param_rel']:.1e}, update rel {result['update_rel']:.1e} ({result['worst_update']}), "
        f"losses {result['losses_theirs'][0]:.4f} -> {result['losses_theirs'][-1]:.4f}, "
        f"grad norms {min(result['grad_norms']):.2f}..{max(result['grad_norms']):.2f}, "
        f"method effect {result['method_effect']}")
  assert result["steps"] == STEPS
  assert result["loss_rel"] <= LOSS_RTOL, result
  assert result["param_rel"] <= PARAM_RTOL, result
  assert result["update_rel"] <= UPDATE_RTOL, result
  losses = result["losses_theirs"]
  assert abs(losses[-1] - losses[0]) > 0.01 * abs(losses[0]), losses
  assert not result["unmoved"], result["unmoved"]
  assert result["null_gradient_moved"] <= 0.05  # key biases: float noise only (trajectories.NULL_GRADIENT)
  if case.clipped:
    assert min(result["grad_norms"]) > case.method.max_grad_norm, result["grad_norms"]
  if case.float64:  # ours is no further from exact arithmetic than torch's own float32 run (x 10)
    print({k: f"{v:.1e}" for k, v in result.items() if "float64" in k})
    assert result["loss_rel_float64_ours"] <= LOSS_RTOL, result
    assert result["update_rel_float64_ours"] <= 10 * result["update_rel_float64_torch"], result
  if result["method_effect"] is not None:  # peft's loss with the adapter disabled differs: the method acted
    assert result["method_effect"] > 1e-3, result["method_effect"]

