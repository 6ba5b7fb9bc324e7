#!/usr/bin/env bash
# The real-data fine-tuning comparison of results/finetune-real.md, one command after the other.
# Needs: lmlab data get debian-handbook --pair de-en --out $DATA/debian-handbook (and debian-summaries,
# debian-descriptions, debian-sections); then this script builds the pretraining corpus (build_corpus.py), a
# tokenizer and shards, pretrains the encoder-decoder with span corruption, and fine-tunes it and the same model
# from scratch on each task, then evaluates on the test splits.
source "$(dirname "$0")/common.sh"
mkdir -p "$EXP"
[ -f "$EXP/corpus.jsonl" ] || step .venv/bin/python $HERE/build_corpus.py "$DATA" "$EXP/corpus.jsonl"
[ -f "$EXP/tok/tokenizer.json" ] || step $LM tokenizer train "$EXP/corpus.jsonl" --out "$EXP/tok" --vocab-size 16000 --sentinels 100
[ -f "$EXP/shards/manifest.json" ] || step $LM prepare "$EXP/corpus.jsonl" --tokenizer "$EXP/tok" --out "$EXP/shards" --quiet > /dev/null
[ -d "$EXP/t5-span/step-000400" ] || step $LM pretrain --config $HERE/t5-span.toml --data.path "$EXP/shards" --train.out_dir "$EXP/t5-span"
for task in mt summaries; do
  data=$DATA/debian-handbook; [ $task = summaries ] && data=$DATA/debian-summaries
  for init in pretrained scratch; do
    out=$EXP/$task-$init
    flag=""; [ $init = scratch ] && flag="--scratch"
    [ -d "$out/best" ] || step $LM finetune --config $HERE/$task.toml --init "$EXP/t5-span" $flag --data.train "$data" --train.out_dir "$out"
    step $LM evaluate "$out" --data "$data" --split test --num-beams 4 --json > "$out/test.json"
  done
done
# The translation pair again with 4x the fine-tuning steps (about 10 minutes each on 2 cores).
for init in pretrained scratch; do
  out=$EXP/mt-long-$init
  flag=""; [ $init = scratch ] && flag="--scratch"
  [ -d "$out/best" ] || step $LM finetune --config $HERE/mt.toml --init "$EXP/t5-span" $flag --train.max_steps 1200 \
      --train.eval_every 300 --train.save_every 1200 --data.train "$DATA/debian-handbook" --train.out_dir "$out"
  step $LM evaluate "$out" --data "$DATA/debian-handbook" --split test --num-beams 4 --json > "$out/test.json"
done
