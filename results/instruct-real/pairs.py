"""Preference accuracy of each model by its own log-probabilities: the share of held-out pairs whose chosen answer
the model finds more likely than the rejected one (summed over the answer's tokens and EOS, as dpo scores them),
and the mean log-prob gap. Rows are laid out by the dpo objective of the last run given (prompt [SEP] answer EOS).

    python results/instruct-real/pairs.py PAIRS.jsonl MODEL... > pairs.json
"""
import json
import sys

import lmlab
from lmlab.config import config_from_dict
from lmlab.data.examples import Fields, read_examples
from lmlab.eval.task import pair_logps, pair_rows
from lmlab.objectives import build_objective
from lmlab.train.checkpoint import STATE, read_json, resolve_model_dir

pairs, models = sys.argv[1], sys.argv[2:]
cfg = config_from_dict(read_json(resolve_model_dir(models[-1]) / STATE)["config"])
_, tok = lmlab.load(models[-1])
objective = build_objective(cfg, tok.lmlab_tokenizer)
rows = pair_rows(objective, read_examples(pairs, "dpo", Fields.from_config(cfg.data)))
out = {}
for path in models:
    model, _ = lmlab.load(path, for_inference=True)
    logps, _ = pair_logps(model, objective, rows)
    gap = logps[:, 0] - logps[:, 1]
    out[path] = {"pairs": len(rows), "accuracy": float((gap > 0).double().mean()), "mean_gap": float(gap.mean())}
    print(f"{path}: {out[path]}", file=sys.stderr)
print(json.dumps(out, indent=2))
