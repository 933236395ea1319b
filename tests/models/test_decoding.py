"""Greedy and beam search over the KV cache vs an uncached loop, transformers' generate and teacher forcing."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from prompt_tuning_jax.checkpoints import hf_t5
from prompt_tuning_jax.models import decoding, t5_config
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.models.t5 import T5, scan_params, shift_right

TINY = dict(vocab_size=128, embed_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
            num_encoder_layers=2, num_decoder_layers=2)
STEPS = 12
MIN_STEPS = 10  # every row must generate at least this many tokens before EOS


class Prompt(nn.Module):
  """A minimal input_transform (prompt tuning): prepends `length` vectors, so encode returns l' = l + length."""
  length: int
  embed_dim: int

  @nn.compact
  def __call__(self, embedded, mask, tokens, *, prompt_index=None, deterministic=True):
    prompt = self.param("prompt", nn.initializers.normal(1.0), (self.length, self.embed_dim))
    b = embedded.shape[0]
    embedded = jnp.concatenate([jnp.broadcast_to(prompt, (b,) + prompt.shape), embedded], axis=1)
    return embedded, jnp.concatenate([jnp.ones((b, self.length), bool), mask], axis=1)


@functools.lru_cache(maxsize=None)
def setup_model(variant: str, prompt_length: int = 0, model_cls=T5, seed: int = 0):
  """(config, model, params, encoder tokens [3, 9] with padding in two rows); cached, so treat as read-only."""
  config = t5_config.preset(f"{variant}_small", **TINY)
  slots = Slots(input_transform=lambda where, embed_dim, backbone: Prompt(prompt_length, embed_dim)
                ) if prompt_length else Slots()
  model = model_cls(config, slots)
  enc = np.random.default_rng(seed).integers(2, config.vocab_size, (3, 9)).astype(np.int32)
  enc[1, 5:] = 0
  enc[2, 7:] = 0
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(seed), enc, enc[:, :3])["params"])
  # NOTE: random tiny T5s (1.0 above all) repeat one token with near-flat distributions. Stronger decoder
  # position bias and self-attention make the output depend on the prefix; a larger final-norm scale makes
  # the argmax margins (about 0.1 here, measured) dwarf the float noise (~1e-6) between implementations.
  decoder = params["decoder"]
  decoder["relpos_bias"]["rel_embedding"] = decoder["relpos_bias"]["rel_embedding"] * 5
  decoder["decoder_norm"]["scale"] = decoder["decoder_norm"]["scale"] * 4
  for i in range(config.num_decoder_layers):
    out = decoder[f"layers_{i}"]["self_attention"]["out"]
    out["kernel"] = out["kernel"] * 4
  return config, model, params, enc


def pick_eos(free: np.ndarray) -> int:
  """A token generated at step MIN_STEPS by some row and by no row before: rows then run >= MIN_STEPS steps."""
  early = set(free[:, :MIN_STEPS].ravel().tolist())
  candidates = [t for t in free[:, MIN_STEPS].tolist() if t not in early]
  assert candidates, f"no token at step {MIN_STEPS} is new in {free}; change the seed"
  return candidates[0]


def naive_greedy(model, params, enc, steps: int, eos_id: int) -> np.ndarray:
  """Reference: each step re-runs the full decoder (no cache) on the prefix and takes the argmax at its end.

  The prefix is right-padded to `steps` tokens so that one compiled forward serves every step; the causal
  mask keeps the padding from reaching position i.
  """
  forward = jax.jit(model.apply)
  tokens = np.zeros((enc.shape[0], steps + 1), np.int32)
  finished = np.zeros(enc.shape[0], bool)
  for i in range(steps):
    logits = forward({"params": params}, enc, tokens[:, :steps])
    following = np.where(finished, 0, np.asarray(jnp.argmax(logits[:, i], axis=-1)))
    tokens[:, i + 1] = following
    finished |= following == eos_id
  return tokens[:, 1:]


def eos_for(model, params, enc) -> int:
  return pick_eos(np.asarray(decoding.greedy_decode(model, params, enc, max_decode_length=STEPS, eos_id=-1)))


@pytest.mark.slow
@pytest.mark.parametrize("variant,prompt_length", [("t5_1_0", 0), ("t5_1_1", 0), ("t5_1_1", 4)])
def test_greedy_matches_uncached_loop(variant, prompt_length):
  _, model, params, enc = setup_model(variant, prompt_length)
  eos = eos_for(model, params, enc)
  got = np.asarray(decoding.greedy_decode(model, params, enc, max_decode_length=STEPS, eos_id=eos))
  np.testing.assert_array_equal(got, naive_greedy(model, params, enc, STEPS, eos))
  assert (got[:, :MIN_STEPS] != 0).all() and (got == eos).any() and (got == 0).any()  # EOS, then padding


def hf_generate(params, config, enc, path, **kwargs) -> transformers.generation.utils.GenerateOutput:
  hf_t5.export_hf_t5(params, config, str(path))
  reference = transformers.T5ForConditionalGeneration.from_pretrained(str(path)).eval()
  with torch.no_grad():
    return reference.generate(input_ids=torch.from_numpy(enc).long(), attention_mask=torch.from_numpy(enc > 0).long(),
                              do_sample=False, max_new_tokens=STEPS, pad_token_id=0, decoder_start_token_id=0,
                              return_dict_in_generate=True, output_scores=True, **kwargs)


@pytest.mark.parametrize("variant", ["t5_1_0", "t5_1_1"])
def test_greedy_matches_transformers_generate(tmp_path, variant):
  config, model, params, enc = setup_model(variant)
  eos = eos_for(model, params, enc)
  got = np.asarray(decoding.greedy_decode(model, params, enc, max_decode_length=STEPS, eos_id=eos))
  want = hf_generate(params, config, enc, tmp_path, num_beams=1, eos_token_id=eos).sequences.numpy()[:, 1:]
  want = np.pad(want, ((0, 0), (0, STEPS - want.shape[1])))  # HF stops when all rows are done
  np.testing.assert_array_equal(got, want)
  assert (got[:, :MIN_STEPS] != 0).all() and (got == eos).any()


def rescore(model, params, enc, tokens, eos_id: int, alpha: float) -> np.ndarray:
  """Teacher-forced summed log-probs (through EOS) / brevity penalty of tokens [b, k, L] -> [b, k]."""
  b, k, length = tokens.shape
  flat = jnp.asarray(tokens.reshape(b * k, length))
  logits = model.apply({"params": params}, np.repeat(enc, k, axis=0), shift_right(flat))
  token_log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits), flat[..., None], axis=-1)[..., 0]
  is_eos = np.asarray(flat) == eos_id
  lengths = np.where(is_eos.any(1), is_eos.argmax(1) + 1, length)
  total = jnp.sum(jnp.where(np.arange(length) < lengths[:, None], token_log_probs, 0.0), axis=1)
  return np.asarray(total / decoding.brevity_penalty(alpha, lengths)).reshape(b, k)


@pytest.mark.parametrize("variant", ["t5_1_0", "t5_1_1"])
def test_one_beam_without_penalty_is_greedy(variant):
  _, model, params, enc = setup_model(variant)
  eos = eos_for(model, params, enc)
  greedy = decoding.greedy_decode(model, params, enc, max_decode_length=STEPS, eos_id=eos)
  tokens, _ = decoding.beam_search(model, params, enc, num_beams=1, max_decode_length=STEPS, eos_id=eos, alpha=0.0)
  np.testing.assert_array_equal(np.asarray(tokens)[:, 0], np.asarray(greedy))


@pytest.mark.parametrize("variant", ["t5_1_0", "t5_1_1"])
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_scores_match_teacher_forcing(variant, alpha):
  _, model, params, enc = setup_model(variant)
  eos = eos_for(model, params, enc)
  tokens, scores = decoding.beam_search(model, params, enc, num_beams=4, max_decode_length=STEPS, eos_id=eos,
                                        alpha=alpha)
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  assert tokens.shape == (3, 4, STEPS) and scores.shape == (3, 4)
  assert (np.diff(scores, axis=1) <= 0).all(), scores  # best first
  rescored = rescore(model, params, enc, tokens, eos, alpha)
  print(f"{variant} alpha={alpha}: max |score - teacher-forced score| {np.abs(scores - rescored).max():.1e}")
  np.testing.assert_allclose(scores, rescored, rtol=1e-5, atol=1e-5)
  after_eos = np.cumsum(tokens == eos, axis=-1) - (tokens == eos) > 0
  assert (tokens[after_eos] == 0).all()
  for row in tokens:
    assert len({tuple(beam) for beam in row}) == 4  # distinct hypotheses


@pytest.mark.parametrize("variant", ["t5_1_0", "t5_1_1"])
def test_beam_matches_transformers_without_eos(tmp_path, variant):
  """Same sequences and scores as HF when no EOS can fire, with no length penalty (alpha=0, length_penalty=0).

  NOTE: with EOS the two differ by design: like t5x we keep a hypothesis that ends in EOS anywhere in the
  top 2k candidates of a step, HF only when it ranks in the top k; and HF's penalty is length**lp.
  """
  config, model, params, enc = setup_model(variant)
  tokens, scores = decoding.beam_search(model, params, enc, num_beams=4, max_decode_length=STEPS, eos_id=-1,
                                        alpha=0.0)
  out = hf_generate(params, config, enc, tmp_path, num_beams=4, num_return_sequences=4, eos_token_id=None,
                    length_penalty=0.0, early_stopping="never")
  want_scores = out.sequences_scores.numpy().reshape(3, 4)
  print(f"{variant}: max |score - transformers score| {np.abs(np.asarray(scores) - want_scores).max():.1e}")
  np.testing.assert_array_equal(np.asarray(tokens), out.sequences.numpy()[:, 1:].reshape(3, 4, STEPS))
  np.testing.assert_allclose(np.asarray(scores), want_scores, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_scanned_layers_decode_like_unscanned():
  config, model, params, enc = setup_model("t5_1_1")
  scanned = T5(config.replace(scan_layers=True))
  eos = eos_for(model, params, enc)
  for search in (lambda m, p: decoding.greedy_decode(m, p, enc, max_decode_length=STEPS, eos_id=eos),
                 lambda m, p: decoding.beam_search(m, p, enc, num_beams=3, max_decode_length=STEPS, eos_id=eos)):
    want, got = search(model, params), search(scanned, scan_params(params))
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5), got, want)


TRACES = []


class CountingT5(T5):
  """Records each trace of `encode` (searches encode exactly once per trace)."""

  def encode(self, *args, **kwargs):
    TRACES.append(1)
    return super().encode(*args, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_no_retrace_for_equal_shapes(search):
  config, model, params, enc = setup_model("t5_1_1", model_cls=CountingT5)
  run = {"greedy": lambda m, p, e: decoding.greedy_decode(m, p, e, max_decode_length=STEPS),
         "beam": lambda m, p, e: decoding.beam_search(m, p, e, num_beams=2, max_decode_length=STEPS)}[search]
  TRACES.clear()  # `init` traced encode too
  count = lambda: len(TRACES)
  jax.block_until_ready(run(model, params, enc))
  assert count() == 1
  # New token values, new parameter values and a new but equal model: same compiled program.
  other_params = jax.tree_util.tree_map(lambda x: x * 1.01, params)
  jax.block_until_ready(run(CountingT5(config, model.slots), other_params, enc[::-1].copy()))
  assert count() == 1
  jax.block_until_ready(run(model, params, enc[:2]))  # a new batch size compiles again
  assert count() == 2
