"""Pretraining corpus for the fine-tuning comparison: Debian text in English and German from the TRAIN splits only,
without any paragraph that occurs in a validation or test source of the downstream tasks."""
import json
import re
import sys
from pathlib import Path

D = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/data")
OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("corpus.jsonl")
def rows(name, split):
    return [json.loads(line) for line in open(D / name / f"{split}.jsonl", encoding="utf-8")]
def paras(text):
    return [p.strip() for p in re.split(r"\n\s*\n|\n", text) if p.strip()]
forbidden = set()
for name in ("debian-handbook", "debian-summaries", "debian-descriptions", "debian-sections"):
    for split in ("valid", "test"):
        for r in rows(name, split):
            for side in ("source", "target", "text"):
                if side in r:
                    forbidden.update(paras(r[side]))
docs = []
for r in rows("debian-handbook", "train"):
    docs += [r["source"], r["target"]]
for r in rows("debian-descriptions", "train"):
    docs += [r["source"], r["target"]]
for r in rows("debian-summaries", "train"):
    docs.append(r["source"])
seen, kept, dropped = set(), [], 0
for doc in docs:
    if doc in seen:
        continue
    seen.add(doc)
    if any(p in forbidden for p in paras(doc)):
        dropped += 1
        continue
    kept.append(doc)
with open(OUT, "w", encoding="utf-8") as f:
    for doc in kept:
        f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
print(len(kept), "documents kept,", dropped, "dropped for overlapping a valid/test source;",
      sum(map(len, kept)) / 1e6, "M characters")
