from pathlib import Path

import pytest

from lmlab.config import PRESETS, Config, ModelConfig, TrainConfig, load_config, model_preset, parse_overrides
from lmlab.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.toml") if not p.name.startswith("compare-"))  # (test_compare.py)


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    from lmlab.objectives import check_objective

    cfg = load_config(path)
    check_objective(cfg)


def test_overrides_both_spellings_and_types():
    cfg = load_config(None, ["--train.max_steps", "200", "--model.bias=false", "--train.lr=1e-3"])
    assert cfg.train.max_steps == 200 and cfg.model.bias is False and cfg.train.lr == 1e-3


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"train\.max_step\b.*valid keys in \[train\]:.*max_steps"):
        load_config(None, ["--train.max_step", "3"])
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(None, ["--trian.max_steps", "3"])


def test_ill_typed_values(tmp_path):
    with pytest.raises(ConfigError, match="train.max_steps must be an integer"):
        load_config(None, ["--train.max_steps", "lots"])
    with pytest.raises(ConfigError, match="model.norm must be one of"):
        load_config(None, ["--model.norm", "batchnorm"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nmax_steps = 'x'\n")
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(bad)
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="not a valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_a_list_of_numbers_from_a_file_or_the_command_line(tmp_path):
    """train.save_at_flops: a TOML list, or comma-separated on the command line; a JSON round trip keeps it."""
    import json

    from lmlab.config import config_from_dict

    assert load_config(None, ["--train.save_at_flops=2.5e+12,5e12"]).train.save_at_flops == (2.5e12, 5e12)
    assert load_config(None, ["--train.save_at_flops="]).train.save_at_flops == ()
    (tmp_path / "run.toml").write_text("[train]\nsave_at_flops = [1e9, 2]\n")
    cfg = load_config(tmp_path / "run.toml")
    assert cfg.train.save_at_flops == (1e9, 2.0) and config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for value, message in (("1e9,x", "a number"), (3, "a list"), ("0", "positive FLOP counts")):
        with pytest.raises(ConfigError, match=f"train.save_at_flops must be {message}"):
            load_config(None, {"train": {"save_at_flops": value}})


def test_validation_at_construction():
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(d_model=100, n_heads=3)
    with pytest.raises(ConfigError, match="multiple of model.n_kv_heads"):
        ModelConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ConfigError, match="train.lr must be a positive number"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="above the model's maximum sequence length"):
        load_config(None, ["--data.seq_len", "1024", "--model.max_seq_len", "512"])


def test_presets_by_exact_name():
    assert {"bert-tiny", "gpt2-tiny", "llama-tiny", "t5-tiny", "bert-small", "gpt2-small", "llama-small",
            "t5-small"} <= set(PRESETS)
    llama = model_preset("llama-small")
    assert (llama.norm, llama.position, llama.activation, llama.bias) == ("rmsnorm", "rotary", "swiglu", False)
    t5 = model_preset("t5-tiny")
    assert (t5.arch, t5.norm, t5.position) == ("encoder-decoder", "rmsnorm", "relative")
    with pytest.raises(ConfigError, match="unknown model preset 'gpt2'"):
        model_preset("gpt2")
    cfg = load_config(None, {"preset": "bert-tiny", "model": {"n_layers": "3"}})
    assert cfg.model.arch == "encoder" and cfg.model.n_layers == 3


def test_roundtrip_through_dict():
    from lmlab.config import config_from_dict

    cfg = load_config(None, ["--train.max_steps", "7", "--objective.name", "mlm"])
    assert config_from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg, Config)


def test_parse_overrides_errors():
    with pytest.raises(ConfigError, match="expected an override"):
        parse_overrides(["max_steps", "3"])
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--train.max_steps"])
