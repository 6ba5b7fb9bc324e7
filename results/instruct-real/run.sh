#!/usr/bin/env bash
# Instruction tuning then preference optimisation on real data (results/instruct-real.md), full fine-tuning and
# LoRA side by side, one command after the other (12.5 minutes on 2 CPU cores, 2026-11-30).
# Needs: lmlab data get debian-instructions --out $DATA/debian-instructions (and debian-preferences), and the
# pretraining shards of results/finetune-real (its run.sh: the Debian corpus, a 16k tokenizer, runs/real/shards).
source "$(dirname "$0")/../finetune-real/common.sh"
EXP=${INSTRUCT:-runs/instruct}  # (common.sh set EXP for its own runs)
HERE=results/instruct-real
mkdir -p "$EXP/instructions" "$EXP/preferences"
# Every 6th training instruction (20k) and every 20th training pair (3k: the reference pass scores each), and
# every 8th / 4th held-out row (about 300 each): CPU-sized.
for split in train valid test; do
  n=6; [ $split != train ] && n=8
  awk "NR % $n == 1" "$DATA/debian-instructions/$split.jsonl" > "$EXP/instructions/$split.jsonl"
  n=20; [ $split != train ] && n=4
  awk "NR % $n == 1" "$DATA/debian-preferences/$split.jsonl" > "$EXP/preferences/$split.jsonl"
done
common=(--train.eval_at_start true --train.progress false --data.seq_len 256 --train.batch_size 8)
# A GPT-2-like decoder (configs/demo-clm.toml: d 256, 4 layers) pretrained on the Debian corpus, 0.8M tokens.
[ -d "$EXP/clm/step-000400" ] || step $LM pretrain --config configs/demo-clm.toml --data.path runs/real/shards \
    --train.out_dir "$EXP/clm" --train.max_steps 400 --train.save_every 400 --train.eval_every 200 --train.progress false
# SFT: full fine-tuning, and LoRA (r 8 on every Linear of the blocks), the same steps and data.
[ -d "$EXP/sft/best" ] || step $LM finetune --config configs/sft.toml --init "$EXP/clm" --data.train "$EXP/instructions" \
    "${common[@]}" --train.max_steps 300 --train.lr 1e-3 --train.warmup_steps 30 --train.eval_every 150 \
    --train.save_every 300 --train.out_dir "$EXP/sft"
[ -d "$EXP/sft-lora/best" ] || step $LM finetune --config configs/sft.toml --init "$EXP/clm" \
    --data.train "$EXP/instructions" "${common[@]}" --train.max_steps 300 --train.lr 2e-3 --train.warmup_steps 30 \
    --train.eval_every 150 --train.save_every 300 --finetune.lora.r 8 --finetune.lora.targets all \
    --train.out_dir "$EXP/sft-lora"
# DPO from the full SFT model: full, and LoRA (the reference is the SFT model in both).
[ -d "$EXP/dpo/best" ] || step $LM finetune --config configs/dpo.toml --init "$EXP/sft" --data.train "$EXP/preferences" \
    "${common[@]}" --train.max_steps 120 --train.lr 1e-4 --train.warmup_steps 12 --train.eval_every 60 \
    --train.save_every 120 --train.out_dir "$EXP/dpo"
[ -d "$EXP/dpo-lora/best" ] || step $LM finetune --config configs/dpo.toml --init "$EXP/sft" \
    --data.train "$EXP/preferences" "${common[@]}" --train.max_steps 120 --train.lr 1e-3 --train.warmup_steps 12 \
    --train.eval_every 60 --train.save_every 120 --finetune.lora.r 8 --finetune.lora.targets all \
    --train.out_dir "$EXP/dpo-lora"
for run in dpo dpo-lora; do
  step $LM evaluate "$EXP/$run" --data "$EXP/preferences" --split test --json > "$EXP/$run/test.json"
done
step .venv/bin/python $HERE/pairs.py "$EXP/preferences/test.jsonl" "$EXP/clm" "$EXP/sft" "$EXP/sft-lora" "$EXP/dpo" \
    "$EXP/dpo-lora" > "$EXP/pairs.json"
step .venv/bin/python $HERE/summary.py "$EXP"
