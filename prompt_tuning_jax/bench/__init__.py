"""Benchmark: our train step against HF PEFT's, side by side in one process (issue 5).

  python -m prompt_tuning_jax.bench --grid issue_cpu --ensemble 8 --out_dir bench_results
  python -m prompt_tuning_jax.bench --models t5_1_1_base --methods prompt_tuning,lora --batch 32 \\
      --input_length 512 --target_length 16 --prompt_length 100

For each row (model x method x batch x lengths, grid.py): compile time, the median step time over the
timed steps after warm-up, tokens/s = (input + target tokens) x batch / step time, model FLOPs per step
from XLA's cost analysis, MFU against hardware.py's peak table, and memory (XLA's planned step footprint
everywhere; on GPU also the device's peak bytes and torch's peak for PEFT). With torch, transformers and
peft importable, the same row runs on PEFT (peft_side.py) and the ratios ours / PEFT are reported.
Modes: the prompt tuning / full fine-tuning FLOP ratio (runner.flop_ratio) and K-prompt ensembles
(ensemble.py). Output in --out_dir: bench.json, bench.md and command.txt (report.py). Targets: targets.py.

The import path needs jax, flax and optax only (no gin, seqio or tensorflow): models come from the
models/*_config.py presets and methods from the peft/*.py factories with their gin files' defaults.
"""
