"""LoRA adapters under Hugging Face names, in PEFT's layout.

PEFT adapts the layers of a ``transformers`` model by their module names (``model.layers.0.self_attn.q_proj``) and
saves ``adapter_config.json`` and ``adapter_model.safetensors`` with keys
``base_model.model.<module>.lora_A.weight`` (r, in) and ``.lora_B.weight`` (out, r), and whole tensors of the
modules it trains besides (``modules_to_save``: a new classifier) as ``base_model.model.<module>.weight``. The
family's weight map says which Hugging Face layer each lmlab Linear is made of: a Linear that Hugging Face keeps as
several layers (Llama's q/k/v_proj in lmlab's ``qkv``) gets one adapter per layer, one it keeps whole (GPT-2's
``c_attn``) one adapter for all of it. So an lmlab LoRA run maps one for one onto PEFT's LoRA of the
``convert to-hf`` export, and PEFT loads it there with the same logits.
"""

from __future__ import annotations

from typing import Any

import torch

from lmlab.errors import ConfigError, InteropError
from lmlab.interop import family_of
from lmlab.interop.core import Rule, _pull, _push
from lmlab.model.lora import Part, projections

PREFIX = "base_model.model."
# PEFT's task type for the class an export writes (PeftModel.from_pretrained needs none; AutoPeftModel* read it)
TASK_TYPES = {"ForCausalLM": "CAUSAL_LM", "LMHeadModel": "CAUSAL_LM", "ForConditionalGeneration": "SEQ_2_SEQ_LM",
              "ForSequenceClassification": "SEQ_CLS"}


class PeftNames:
    """The Hugging Face names of one lmlab model's tensors and adapters, by the family its config exports to.

    Raises:
        InteropError: the model's config has no Hugging Face equivalent (the message names the option).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        cfg = model.config
        self.family = family_of(cfg)
        self.export = self.family.from_config(cfg)
        self.rules: dict[str, Rule] = {r.ours: r for r in self.family.weights(cfg).rules}
        self.projections = projections(model)

    def hf(self, name: str) -> str:
        """A Hugging Face tensor (or module) name as the export writes it (a bare base model loses its prefix)."""
        return name.removeprefix(self.family.prefix) if not self.export.prefixed and self.family.prefix else name

    def parts(self, targets: tuple[str, ...], all_targets: bool = False) -> tuple[dict[str, list[Part]],
                                                                                   dict[tuple[str, str], str]]:
        """The adapter parts of every block Linear for ``targets`` (projection names), and the Hugging Face module
        of each adapted part, by (Linear path, part name).

        Raises:
            ConfigError: a target that splits a layer Hugging Face keeps whole (GPT-2's c_attn holds q, k and v),
                or one that names no projection of this model (unless ``all_targets``).
        """
        parts: dict[str, list[Part]] = {}
        modules: dict[tuple[str, str], str] = {}
        found: set[str] = set()
        for path, projs in self.projections.items():
            rule = self.rules[f"{path}.weight"]
            found.update(name for name, _ in projs)
            if rule.op == "cat" and len(rule.hf) == len(projs):  # one Hugging Face layer per projection
                parts[path] = [(name, rows, name in targets) for name, rows in projs]
                modules.update({(path, name): self.hf(h.removesuffix(".weight"))
                                for (name, _), h in zip(projs, rule.hf, strict=True)})
                continue
            assert len(rule.hf) == 1, rule  # a bug in a family's weight map
            names = [name for name, _ in projs]
            hit = [n for n in names if n in targets]
            layer = self.hf(rule.hf[0].removesuffix(".weight"))
            if hit and len(hit) < len(names):
                raise ConfigError(f"finetune.lora.targets: {self.family.name} keeps {', '.join(names)} in one layer "
                                  f"({layer}), which PEFT adapts whole: target all of {', '.join(names)} or none")
            part = path.rsplit(".", 1)[1]
            parts[path] = [(part, sum(rows for _, rows in projs), bool(hit))]
            modules[(path, part)] = layer
        unknown = [t for t in targets if t not in found]
        if unknown and not all_targets:
            raise ConfigError(f"finetune.lora.targets: {', '.join(map(repr, unknown))} names no projection of this "
                              f"model (it has {', '.join(sorted(found))})")
        return parts, modules

    def tensor_names(self, name: str) -> tuple[str, ...]:
        """The Hugging Face tensor(s) an lmlab tensor (a whole one trained beside the adapters) is saved as."""
        return tuple(self.hf(h) for h in self.rules[name].hf)

    def save_tensors(self, adapters: dict[str, torch.Tensor], trained: dict[str, torch.Tensor],
                     modules: dict[tuple[str, str], str]) -> dict[str, torch.Tensor]:
        """PEFT's keys for lmlab ``adapters`` (``<linear>.lora.A.<part>``, ``.B.<part>``) and ``trained`` tensors."""
        out = {}
        for name, t in adapters.items():
            path, which, part = _adapter_name(name)
            out[f"{PREFIX}{modules[(path, part)]}.lora_{which}.weight"] = t
        for name, t in trained.items():
            for h, piece in zip(self.tensor_names(name), _push(self.rules[name], t), strict=True):
                out[f"{PREFIX}{h}"] = piece.contiguous()
        return out

    def read_tensors(self, tensors: dict[str, torch.Tensor], adapters: list[str], trained: list[str],
                     modules: dict[tuple[str, str], str], where: str) -> dict[str, torch.Tensor]:
        """The lmlab tensors named in ``adapters`` and ``trained`` from PEFT's keys (the inverse of
        :meth:`save_tensors`).

        Raises:
            InteropError: a tensor is missing, or one is left over.
        """
        keys: dict[str, list[str]] = {}
        for name in adapters:
            path, which, part = _adapter_name(name)
            keys[name] = [f"{PREFIX}{modules[(path, part)]}.lora_{which}.weight"]
        for name in trained:
            keys[name] = [f"{PREFIX}{h}" for h in self.tensor_names(name)]
        wanted = {k for ks in keys.values() for k in ks}
        missing, extra = sorted(wanted - tensors.keys()), sorted(tensors.keys() - wanted)
        if missing or extra:
            raise InteropError(f"{where} does not hold the adapters its adapter_config.json describes: missing "
                               f"{missing[:4]}, unexpected {extra[:4]}")
        return {name: _pull(self.rules[name], [tensors[k] for k in ks]) if name in self.rules else tensors[ks[0]]
                for name, ks in keys.items()}

    def adapter_config(self, r: int, alpha: float, dropout: float, modules: list[str], trained: list[str],
                       base: str) -> dict[str, Any]:
        """adapter_config.json for PEFT's ``LoraConfig``: the adapted modules by full name."""
        task = next((t for suffix, t in TASK_TYPES.items() if self.export.architecture.endswith(suffix)), None)
        to_save = sorted({h.rsplit(".", 1)[0] for name in trained for h in self.tensor_names(name)})
        transposed = {self.rules[f"{p}.weight"].op == "t" for p in self.projections}
        return {"peft_type": "LORA", "task_type": task, "base_model_name_or_path": base, "r": r, "lora_alpha": alpha,
                "lora_dropout": dropout, "target_modules": sorted(modules), "modules_to_save": to_save or None,
                "fan_in_fan_out": transposed == {True}, "bias": "none", "use_rslora": False, "use_dora": False,
                "init_lora_weights": True, "inference_mode": True}


def _adapter_name(name: str) -> tuple[str, str, str]:
    """``decoder.layers.0.attn.qkv.lora.A.q`` -> (``decoder.layers.0.attn.qkv``, ``A``, ``q``)."""
    path, _, rest = name.partition(".lora.")
    which, _, part = rest.partition(".")
    if which not in ("A", "B") or not part:
        raise InteropError(f"{name} is not an adapter tensor")
    return path, which, part
