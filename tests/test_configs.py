"""Every shipped config parses with the recipe its header names: a typo in a YAML key is an error here,
not an hour into a user's run (TRL's unknown-key check stays on).

The first line of every config is the command that runs it, e.g.
``# python recipes/build_sids.py --config recipes/configs/tiny/sids.yaml ...``; the test reads the
recipe from there and parses the file with the dataclasses of that recipe's ``TrlParser(...)``, so a
header cannot name the wrong recipe or another file. Chain files name
``run_chain('<this file>')`` instead.
"""

import ast
import enum
import importlib
import re
from pathlib import Path

import pytest
import yaml
from trl import TrlParser

from eg_grpo.pipeline import ChainConfig
from eg_grpo.stages import get_stage

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
ALL = sorted(CONFIGS.rglob("*.yaml"))
HEADER = re.compile(r"^# (?:python|accelerate launch)(?: --\S+ \S+)* (recipes/\w+\.py) .*?--config (\S+)")
CHAIN_HEADER = re.compile(r"^# .*run_chain\('([^']+)'\)")
# The keys an expert-guided config and its vanilla / continued-SFT twins may differ in; everything else is
# one recipe.
PAIR_KEYS = {"num_expert_samples", "output_dir", "run_name"}
CONTROL_KEYS = {"training_objective", "output_dir", "run_name"}
# The reward-aware control (rejection SFT) may also choose its selection rule: same rollouts, rewards, budget.
REWARD_CONTROL_KEYS = CONTROL_KEYS | {"rejection_selection", "reward_weight_temperature", "sft_log_probs"}


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _header_recipe(path: Path) -> Path | None:
    """The recipe the config's first line runs (None for a chain file), checked to name this very file."""
    first = path.read_text().split("\n", 1)[0]
    chain = CHAIN_HEADER.match(first)
    if chain:
        assert chain.group(1) == _relative(path), f"{path}: the header runs another chain, {chain.group(1)}"
        return None
    match = HEADER.match(first)
    assert match, (
        f"{path}: the first line must be the command that runs it ('# python recipes/X.py --config ...')"
    )
    recipe, config = match.groups()
    assert config == _relative(path), f"{path}: the header's --config names another file, {config}"
    assert (REPO / recipe).exists(), f"{path}: the header's recipe {recipe} does not exist"
    return REPO / recipe


PARSERS = ("TrlParser", "StageParser")


def _recipe_dataclasses(recipe: Path) -> tuple[type, ...]:
    """The dataclasses a recipe parses: those of the stage its ``run_recipe("STAGE", ...)`` names, else
    those of its one ``StageParser(...)`` / ``TrlParser(...)`` call, resolved in the recipe module."""
    calls = [node for node in ast.walk(ast.parse(recipe.read_text())) if isinstance(node, ast.Call)]
    name = lambda node: getattr(node.func, "id", getattr(node.func, "attr", None))  # noqa: E731
    stages = [c for c in calls if name(c) == "run_recipe"]
    if stages:
        assert len(stages) == 1 and isinstance(stages[0].args[0], ast.Constant), f"{recipe}: one run_recipe"
        return get_stage(stages[0].args[0].value).argument_types()
    parsers = [c for c in calls if name(c) in PARSERS]
    assert len(parsers) == 1 and parsers[0].args, f"{recipe}: expected run_recipe(...) or one parser call"
    module = importlib.import_module(f"recipes.{recipe.stem}")
    value = eval(ast.unparse(parsers[0].args[0]), vars(module))  # names of the recipe, not user code
    return (value,) if isinstance(value, type) else tuple(value)


def _parsers(path: Path) -> tuple[type, ...]:
    return _recipe_dataclasses(_header_recipe(path))


def _as_written(key, value):
    """A parsed value as the YAML would write it (enums by value; transformers lists ``report_to``)."""
    if isinstance(value, enum.Enum):
        return value.value
    if key == "report_to" and isinstance(value, list):
        return "none" if not value else value[0] if len(value) == 1 else value
    return value


RECIPE_CONFIGS = [p for p in ALL if p.stem != "chain"]


@pytest.mark.parametrize("path", ALL, ids=[_relative(p) for p in ALL])
def test_header_names_its_recipe_and_this_file(path):
    recipe = _header_recipe(path)
    assert (recipe is None) == (path.stem == "chain")


@pytest.mark.parametrize("path", RECIPE_CONFIGS, ids=[_relative(p) for p in RECIPE_CONFIGS])
def test_config_parses_with_its_recipe(path):
    if _header_recipe(path).stem == "protocol":  # the protocol's own file: its loader checks every key
        from eg_grpo.protocol import ProtocolConfig

        config = ProtocolConfig.load(path)
        assert all(arm.config.is_file() for arm in config.arms.values())
        phases = (config.tune, config.test)
        assert all(p.is_file() for phase in phases for p in (phase.evaluate, phase.arena) if p is not None)
        return
    if _header_recipe(path).stem == "paper_tables":  # a plain YAML of table rows, not a dataclass config
        from recipes.paper_tables import KEYS

        assert set(yaml.safe_load(path.read_text())) <= set(KEYS)
        return
    extra = ["--bf16", "false"] if path.parent.name.startswith("qwen") else []  # bf16 needs a GPU
    parsed = TrlParser(_parsers(path)).parse_args_and_config(["--config", str(path), *extra])
    # every key lands on a field of the recipe's dataclasses with the value written in the YAML
    for key, value in yaml.safe_load(path.read_text()).items():
        if extra and key == "bf16":
            continue
        owners = [p for p in parsed if hasattr(p, key)]
        assert owners, f"{key} is on none of the recipe's dataclasses"
        assert _as_written(key, getattr(owners[0], key)) == value, key


PAIRS = sorted(p.parent for p in CONFIGS.rglob("vanilla_grpo.yaml"))


@pytest.mark.parametrize("folder", PAIRS, ids=lambda p: p.name)
def test_vanilla_is_its_eg_config_without_experts(folder):
    eg = yaml.safe_load((folder / "eg_grpo.yaml").read_text())
    vanilla = yaml.safe_load((folder / "vanilla_grpo.yaml").read_text())
    differ = {k for k in eg.keys() | vanilla.keys() if eg.get(k, "<absent>") != vanilla.get(k, "<absent>")}
    assert differ <= PAIR_KEYS, (
        f"{folder.name}: vanilla_grpo.yaml drifted from eg_grpo.yaml in {sorted(differ - PAIR_KEYS)}"
    )
    assert vanilla["num_expert_samples"] == 0 < eg["num_expert_samples"]
    assert vanilla["output_dir"] != eg["output_dir"] and vanilla["run_name"] != eg["run_name"]


TRIOS = sorted(p.parent for p in CONFIGS.rglob("continued_sft.yaml"))


def test_every_paired_folder_has_its_control():
    assert {p.name for p in PAIRS} >= {"tiny", "demo", "amazon_office"}
    assert [p.name for p in PAIRS] == [p.name for p in TRIOS], "a vanilla/EG pair without continued_sft.yaml"


@pytest.mark.parametrize("folder", TRIOS, ids=lambda p: p.name)
def test_continued_sft_is_its_eg_config_with_the_supervised_objective(folder):
    eg = yaml.safe_load((folder / "eg_grpo.yaml").read_text())
    control = yaml.safe_load((folder / "continued_sft.yaml").read_text())
    differ = {k for k in eg.keys() | control.keys() if eg.get(k, "<absent>") != control.get(k, "<absent>")}
    assert differ <= CONTROL_KEYS, (
        f"{folder.name}: continued_sft.yaml drifted from eg_grpo.yaml in {sorted(differ - CONTROL_KEYS)}"
    )
    assert control["training_objective"] == "continued_sft" and eg.get("training_objective", "grpo") == "grpo"
    outputs = {
        yaml.safe_load((folder / f"{n}.yaml").read_text())["output_dir"] for n in ("eg_grpo", "vanilla_grpo")
    }
    assert control["output_dir"] not in outputs and control["run_name"] != eg["run_name"]


REWARD_CONTROLS = sorted(p.parent for p in CONFIGS.rglob("rejection_sft.yaml"))


def test_every_paired_folder_has_its_reward_aware_control():
    assert [p.name for p in PAIRS] == [p.name for p in REWARD_CONTROLS], (
        "a vanilla/EG pair without rejection_sft.yaml"
    )


@pytest.mark.parametrize("folder", REWARD_CONTROLS, ids=lambda p: p.name)
def test_rejection_sft_is_its_eg_config_with_the_reward_aware_objective(folder):
    eg = yaml.safe_load((folder / "eg_grpo.yaml").read_text())
    control = yaml.safe_load((folder / "rejection_sft.yaml").read_text())
    differ = {k for k in eg.keys() | control.keys() if eg.get(k, "<absent>") != control.get(k, "<absent>")}
    assert differ <= REWARD_CONTROL_KEYS, (
        f"{folder.name}: rejection_sft.yaml drifted from eg_grpo.yaml in {sorted(differ - REWARD_CONTROL_KEYS)}"
    )
    assert control["training_objective"] == "rejection_sft" and eg.get("training_objective", "grpo") == "grpo"
    others = {yaml.safe_load((folder / f"{n}.yaml").read_text())["output_dir"]
              for n in ("eg_grpo", "vanilla_grpo", "continued_sft")}  # fmt: skip
    assert control["output_dir"] not in others and control["run_name"] != eg["run_name"]


def test_reward_control_check_catches_a_drift(tmp_path):
    folder = tmp_path / "quad"
    folder.mkdir()
    for name in ("eg_grpo", "vanilla_grpo", "continued_sft"):
        (folder / f"{name}.yaml").write_text((CONFIGS / "tiny" / f"{name}.yaml").read_text())
    (folder / "rejection_sft.yaml").write_text(
        (CONFIGS / "tiny" / "rejection_sft.yaml")
        .read_text()
        .replace("num_generations:", "num_generations: 4\n#")
    )
    with pytest.raises(AssertionError, match="drifted from eg_grpo.yaml in \\['num_generations'\\]"):
        test_rejection_sft_is_its_eg_config_with_the_reward_aware_objective(folder)


def test_pair_check_catches_a_drift(tmp_path):
    folder = tmp_path / "pair"
    folder.mkdir()
    eg_text = (CONFIGS / "tiny" / "eg_grpo.yaml").read_text()
    (folder / "eg_grpo.yaml").write_text(eg_text)
    (folder / "vanilla_grpo.yaml").write_text(
        (CONFIGS / "tiny" / "vanilla_grpo.yaml")
        .read_text()
        .replace("learning_rate:", "learning_rate: 1.0e-3\n#")
    )
    with pytest.raises(AssertionError, match="drifted from eg_grpo.yaml in \\['learning_rate'\\]"):
        test_vanilla_is_its_eg_config_without_experts(folder)


def test_control_check_catches_a_drift(tmp_path):
    folder = tmp_path / "trio"
    folder.mkdir()
    for name in ("eg_grpo", "vanilla_grpo"):
        (folder / f"{name}.yaml").write_text((CONFIGS / "tiny" / f"{name}.yaml").read_text())
    (folder / "continued_sft.yaml").write_text(
        (CONFIGS / "tiny" / "continued_sft.yaml").read_text().replace("max_steps:", "max_steps: 12\n#")
    )
    with pytest.raises(AssertionError, match="drifted from eg_grpo.yaml in \\['max_steps'\\]"):
        test_continued_sft_is_its_eg_config_with_the_supervised_objective(folder)


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("chain.yaml")), ids=lambda p: p.parent.name)
def test_chain_names_existing_stage_configs(path):
    chain = ChainConfig.load(path)
    assert all((REPO / cfg).exists() for cfg in chain.stages.values()), chain.stages


def test_a_typo_is_an_error(tmp_path):
    bad = tmp_path / "eg_grpo.yaml"
    bad.write_text((CONFIGS / "tiny" / "eg_grpo.yaml").read_text() + "num_expert_sample: 2\n")
    with pytest.raises(ValueError, match="num_expert_sample"):
        TrlParser(_recipe_dataclasses(REPO / "recipes" / "eg_grpo.py")).parse_args_and_config(
            ["--config", str(bad)]
        )


def test_a_header_naming_another_file_is_caught(tmp_path):
    config = CONFIGS / "tiny" / "sids_rqvae.yaml"
    moved = tmp_path / "sids_rqvae.yaml"
    moved.write_text(config.read_text())
    with pytest.raises(AssertionError, match="the header's --config names another file"):
        _header_recipe(moved)
