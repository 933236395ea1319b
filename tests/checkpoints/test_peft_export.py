"""PEFT export (checkpoints/peft_export.py): our logits against `peft.PeftModel.from_pretrained` on our HF export."""
import functools
import json

import flax.linen as nn
import jax
import numpy as np
import peft
import pytest
import torch
import transformers
from safetensors.numpy import load_file

from prompt_tuning_jax.checkpoints import hf_bert, hf_t5, peft_export
from prompt_tuning_jax.models import bert, t5_config
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.models.t5 import T5, scan_params, shift_right
from prompt_tuning_jax.peft import lora, prefix, prompt_init, prompts

TINY = dict(vocab_size=128, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64, num_encoder_layers=2,
            num_decoder_layers=2)
RANK, ALPHA, P = 4, 12.0, 5  # scale alpha / r = 3


def t5_batch(rng):
  """Encoder tokens [3, 9] (rows 1, 2 padded) and decoder inputs [3, 4]."""
  enc = rng.integers(2, 128, (3, 9)).astype(np.int32)
  enc[1, 6:], enc[2, 4:] = 0, 0
  return enc, np.asarray(shift_right(rng.integers(2, 128, (3, 4)).astype(np.int32)))


def init(model, *args):
  return nn.meta.unbox(model.init(jax.random.key(0), *args)["params"])


def zeros(model, *args):
  """Params of the right structure without compiling an init (for the error paths)."""
  abstract = jax.eval_shape(lambda: init(model, *args))
  return jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), abstract)


def randomize(params, rng, names=("a", "b")):
  """Draws the method's leaves (LoRA B starts at zero) so that every one of them matters."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: rng.normal(size=x.shape).astype(np.float32) * 0.3 if path[-1].key in names else x, params)


def strip(tree):
  return {k: strip(v) if isinstance(v, dict) else v for k, v in tree.items() if not k.startswith(("lora_", "prompt"))}


def lora_slots(targets):
  return Slots(projection_delta=functools.partial(lora.lora_factory, rank=RANK, alpha=ALPHA, targets=targets,
                                                  dropout_rate=0.1))


def load_peft(base, adapter_dir, expected_keys):
  """PeftModel on `base`; checks that PEFT's own state dict of the adapter is exactly the file's keys."""
  model = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
  assert set(peft.get_peft_model_state_dict(model)) == set(expected_keys)
  return model


def torch_logits(model, **inputs):
  with torch.no_grad():
    return model(**{k: torch.from_numpy(np.asarray(v)).long() for k, v in inputs.items()}).logits.numpy()


def assert_matches(ours, reference, what, **inputs):
  """Ours == PEFT's logits, and the adapter did act (PEFT's logits with the adapter disabled differ)."""
  theirs = torch_logits(reference, **inputs)
  with reference.disable_adapter():
    base = torch_logits(reference, **inputs)
  diff = np.abs(np.asarray(ours) - theirs).max()
  print(f"{what}: max |logit diff| {diff:.2e} (max |logit| {np.abs(theirs).max():.2f}, "
        f"adapter effect {np.abs(theirs - base).max():.2f})")
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
  assert np.abs(theirs).max() > 0.5 and np.abs(theirs - base).max() > 0.1


@pytest.mark.parametrize("variant,targets,hf_targets", [
    ("t5_1_0", ("query", "value"), ["q", "v"]),
    ("t5_1_1", ("query", "value", "wi_0", "wo"), ["q", "v", "wi_0", "wo"]),
])
@pytest.mark.slow
def test_t5_lora_matches_peft(tmp_path, variant, targets, hf_targets):
  config = t5_config.preset(f"{variant}_small", **TINY)
  enc, dec = t5_batch(np.random.default_rng(0))
  model = T5(config, lora_slots(targets))
  params = randomize(init(model, enc, dec), np.random.default_rng(1))
  written = peft_export.export_hf_peft(params, model, str(tmp_path))
  assert (written["r"], written["lora_alpha"], written["lora_dropout"]) == (RANK, ALPHA, 0.1)
  assert written["target_modules"] == hf_targets and written["task_type"] == "SEQ_2_SEQ_LM"
  tensors = load_file(tmp_path / peft_export.ADAPTER_WEIGHTS)
  a = params["decoder"]["layers_1"]["encoder_decoder_attention"]["lora_query"]["a"]
  key = "base_model.model.decoder.block.1.layer.1.EncDecAttention.q.lora_A.weight"
  np.testing.assert_array_equal(tensors[key], a.T)  # PyTorch Linear [out, in]: A [in, r] -> [r, in]
  scanned = T5(config.replace(scan_layers=True), model.slots)  # a scanned tree exports the same tensors
  peft_export.export_hf_peft(scan_params(params), scanned, str(tmp_path / "scanned"))
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      np.array_equal, load_file(tmp_path / "scanned" / peft_export.ADAPTER_WEIGHTS), tensors))
  reference = load_peft(hf_t5.to_transformers(strip(params), config), str(tmp_path), tensors)
  assert_matches(model.apply({"params": params}, enc, dec), reference, f"{variant} LoRA", input_ids=enc,
                 attention_mask=enc > 0, decoder_input_ids=dec)


@pytest.mark.slow
def test_t5_prompt_tuning_matches_peft(tmp_path):
  config = t5_config.preset("t5_1_1_small", **TINY)
  enc, dec = t5_batch(np.random.default_rng(2))
  model = T5(config, Slots(input_transform=functools.partial(prompts.prompt_factory, prompt_length=P,
                                                             num_prompts=2)))
  params = randomize(init(model, enc, dec), np.random.default_rng(3), names=("prompt",))
  written = peft_export.export_hf_peft(params, model, str(tmp_path), prompt_id=1)
  with open(tmp_path / peft_export.ADAPTER_CONFIG) as f:
    assert json.load(f) == written
  assert (written["num_virtual_tokens"], written["num_transformer_submodules"]) == (P, 1)
  reference = load_peft(hf_t5.to_transformers(strip(params), config), str(tmp_path), ["prompt_embeddings"])
  assert isinstance(reference, peft.PeftModelForSeq2SeqLM)
  ours = model.apply({"params": params}, enc, dec, prompt_index=np.ones(3, np.int32))
  assert_matches(ours, reference, "T5 prompt tuning", input_ids=enc, attention_mask=enc > 0, decoder_input_ids=dec)


@pytest.mark.slow
def test_bert_lora_matches_peft_on_minilm(tmp_path, minilm_dir):
  base_model, base = hf_bert.load_hf_bert(minilm_dir, head="sequence_classification", num_labels=3)
  model = bert.BertForSequenceClassification(base_model.config, lora_slots(("query", "value", "wo")))
  ids = np.random.default_rng(4).integers(1000, 30000, (2, 8)).astype(np.int32)
  ids[:, 0], ids[0, 7], ids[1, 5], ids[1, 6:] = 101, 102, 102, 0  # [CLS] ... [SEP] [PAD]
  rng = np.random.default_rng(5)
  lora_params = jax.eval_shape(lambda: init(model, ids))
  params = jax.tree_util.tree_map_with_path(  # the frozen base from MiniLM; LoRA and the classifier "trained"
      lambda path, x: rng.normal(size=x.shape).astype(np.float32) * (1.0 if path[0].key == "classifier" else 0.05)
      if any(k.key.startswith(("lora_", "classifier")) for k in path)
      else functools.reduce(lambda t, k: t[k.key], path, base), lora_params)
  hf_bert.export_hf_bert(base, base_model.config, str(tmp_path / "base"))
  written = peft_export.export_hf_peft(params, model, str(tmp_path / "adapter"),
                                       base_model_name_or_path=str(tmp_path / "base"))
  assert written["target_modules"] == ["0.output.dense", "1.output.dense", "2.output.dense", "3.output.dense",
                                       "4.output.dense", "5.output.dense", "query", "value"]
  assert written["task_type"] == "SEQ_CLS" and written["modules_to_save"] == ["classifier"]
  hf_base = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "base"),
                                                                       attn_implementation="eager")
  tensors = load_file(tmp_path / "adapter" / peft_export.ADAPTER_WEIGHTS)
  assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= set(tensors)
  reference = load_peft(hf_base, str(tmp_path / "adapter"), tensors)
  assert_matches(model.apply({"params": params}, ids, ids > 0), reference, "MiniLM LoRA", input_ids=ids,
                 attention_mask=ids > 0)


def test_prompt_npy_round_trips_through_from_file(tmp_path):
  config = t5_config.preset("t5_1_0_small", **TINY)
  enc, dec = t5_batch(np.random.default_rng(6))
  factory = functools.partial(prompts.prompt_factory, prompt_length=P, num_prompts=3)
  params = init(T5(config, Slots(input_transform=factory)), enc, dec)
  path = str(tmp_path / "prompt")  # no '.npy': the file is written at exactly this path
  peft_export.export_prompt_npy(params, path, prompt_id=2)
  loaded = prompt_init.FromFile(path)(jax.random.key(0), P, config.embed_dim)
  np.testing.assert_array_equal(loaded, params["encoder"]["prompt"]["prompt"][2])
  from_file = functools.partial(factory, num_prompts=1, initializer=prompt_init.FromFile(path))
  reloaded = init(T5(config, Slots(input_transform=from_file)), enc, dec)
  np.testing.assert_array_equal(reloaded["encoder"]["prompt"]["prompt"][0], loaded)
  with pytest.raises(ValueError, match=r"prompt_id=3, but the bank encoder/prompt/prompt \(3, 5, 32\) holds 3"):
    peft_export.export_prompt_npy(params, path, prompt_id=3)


def test_unsupported_methods_name_the_parameter(tmp_path):
  config = t5_config.preset("t5_1_0_small", **TINY)
  enc, dec = t5_batch(np.random.default_rng(7))
  after_bos = T5(config, Slots(input_transform=functools.partial(prompts.prompt_factory, prompt_length=P,
                                                                 placement="after_bos")))
  with pytest.raises(ValueError, match=r"encoder/prompt/prompt: PEFT prepends .* at offset 1"):
    peft_export.export_hf_peft(zeros(after_bos, enc, dec), after_bos, str(tmp_path))
  with_prefix = T5(config, Slots(attention_kv_prefix=functools.partial(prefix.prefix_factory, length=3)))
  with pytest.raises(ValueError, match=r"parameter decoder/layers_0/encoder_decoder_attention/prefix/\w+ \(3, "):
    peft_export.export_hf_peft(zeros(with_prefix, enc, dec), with_prefix, str(tmp_path))
  both = T5(config, Slots(input_transform=after_bos.slots.input_transform, projection_delta=lora.lora_factory))
  with pytest.raises(ValueError, match=r"both LoRA \(decoder/.*/lora_query/a\) and a prompt \(encoder/prompt/prompt"):
    peft_export.export_hf_peft(zeros(both, enc, dec), both, str(tmp_path))
  bert_config = bert.BertConfig(vocab_size=97, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=48, num_layers=1,
                                max_position_embeddings=24)
  bert_prompt = bert.BertForSequenceClassification(bert_config, after_bos.slots)
  with pytest.raises(ValueError, match=r"bert/prompt/prompt: BERT prompt tuning has no exact HF PEFT form"):
    peft_export.export_hf_peft(zeros(bert_prompt, enc), bert_prompt, str(tmp_path))
