"""Checkpoint readers and writers: HF directories (T5, BERT), t5x checkpoints, PEFT-only orbax checkpoints.

  model, params = checkpoints.load_hf_t5(path)      # T5ForConditionalGeneration dir (config.json + safetensors)
  model, params = checkpoints.load_hf_bert(path)    # BertModel dir, with or without the `bert.` prefix
  params = checkpoints.load_t5x_checkpoint(path)    # a t5x checkpoint dir (msgpack + tensorstore), no t5x needed
"""
from prompt_tuning_jax.checkpoints.hf_bert import export_hf_bert, load_hf_bert
from prompt_tuning_jax.checkpoints.hf_t5 import export_hf_t5, load_hf_t5
from prompt_tuning_jax.checkpoints.t5x import load_t5x_checkpoint, save_t5x_checkpoint
