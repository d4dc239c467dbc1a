"""Every shipped config parses with its recipe's parser: a typo in a YAML key is an error here,
not an hour into a user's run (TRL's unknown-key check stays on)."""

import enum
from pathlib import Path

import pytest
import yaml
from trl import ModelConfig, SFTConfig, TrlParser

from eg_grpo.config import EGGRPOConfig
from eg_grpo.data.amazon import AmazonConfig
from eg_grpo.eval.evaluator import EvalSettings
from eg_grpo.pipeline import ChainConfig
from eg_grpo.rl import EGGRPOScriptArguments
from eg_grpo.sid.build import SIDConfig

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


def _parsers(path: Path):
    """The dataclasses ``recipes/<recipe>.py`` parses this config with (by file name and folder)."""
    from recipes.build_sids import BuildSidsArguments
    from recipes.evaluate import EvaluateArguments
    from recipes.make_amazon_data import MakeAmazonDataArguments
    from recipes.make_data import MakeDataArguments
    from recipes.sft import SFTScriptArguments
    from recipes.train_ranker import TrainRankerArguments

    name = path.stem
    if name.startswith("data"):
        return (MakeAmazonDataArguments, AmazonConfig) if path.parent.name == "amazon_office" else (MakeDataArguments,)
    if name.startswith("sids"):
        return (BuildSidsArguments, SIDConfig)
    if name == "sft":
        return (SFTScriptArguments, SFTConfig, ModelConfig)
    if name.startswith("evaluate"):
        return (EvaluateArguments, EvalSettings)
    if name.startswith(("eg_grpo", "vanilla_grpo")):
        return (EGGRPOScriptArguments, EGGRPOConfig, ModelConfig)
    if name == "ranker":
        return (TrainRankerArguments,)
    if name.startswith("arena"):
        from eg_grpo.arena import ArenaArguments

        return (ArenaArguments,)
    raise AssertionError(f"{path}: no recipe known for this config; add it to _parsers")


ALL = sorted(p for p in CONFIGS.rglob("*.yaml") if p.stem not in ("chain", "paper_tables"))  # paper_tables: tests/eval


def _as_written(key, value):
    """A parsed value as the YAML would write it (enums by value; transformers lists ``report_to``)."""
    if isinstance(value, enum.Enum):
        return value.value
    if key == "report_to" and isinstance(value, list):
        return "none" if not value else value[0] if len(value) == 1 else value
    return value


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(CONFIGS)) for p in ALL])
def test_config_parses_with_its_recipe(path):
    extra = ["--bf16", "false"] if path.parent.name.startswith("qwen") else []  # bf16 needs a GPU
    parsed = TrlParser(_parsers(path)).parse_args_and_config(["--config", str(path), *extra])
    # every key lands on a field of the recipe's dataclasses with the value written in the YAML
    for key, value in yaml.safe_load(path.read_text()).items():
        if extra and key == "bf16":
            continue
        owners = [p for p in parsed if hasattr(p, key)]
        assert owners, f"{key} is on none of the recipe's dataclasses"
        assert _as_written(key, getattr(owners[0], key)) == value, key


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("chain.yaml")), ids=lambda p: p.parent.name)
def test_chain_names_existing_stage_configs(path):
    chain = ChainConfig.load(path)
    repo = CONFIGS.parents[1]
    assert all((repo / cfg).exists() for cfg in chain.stages.values()), chain.stages


def test_a_typo_is_an_error(tmp_path):
    bad = tmp_path / "eg_grpo.yaml"
    bad.write_text((CONFIGS / "tiny" / "eg_grpo.yaml").read_text() + "num_expert_sample: 2\n")
    with pytest.raises(ValueError, match="num_expert_sample"):
        TrlParser(_parsers(bad)).parse_args_and_config(["--config", str(bad)])
