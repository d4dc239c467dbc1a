"""Shared fixtures (built once per session): the tiny simulated log, its codebook, SID folder and SFT model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from eg_grpo.data.schema import SearchLog
from eg_grpo.data.simulator import SimulatorConfig, simulate, write_simulated_data
from eg_grpo.sid.codebook import SIDCodebook

# Tests import recipes by path; appended (not prepended) so `eg_grpo` stays the package, never
# the launcher recipes/eg_grpo.py, and `import _recipe_path` inside a recipe resolves.
sys.path.append(str(Path(__file__).resolve().parents[1] / "recipes"))
# Helper modules shared by tests in several folders (e.g. stage_records.py) import by name.
sys.path.append(str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny_log() -> SearchLog:
    """The ``tiny`` simulator preset (500 items, 2k requests, seed 0). Treat it as read-only."""
    return simulate(SimulatorConfig.preset("tiny"))


@pytest.fixture(scope="session")
def tiny_data_dir(tiny_log, tmp_path_factory):
    """A folder holding ``tiny_log`` as items/requests/impressions.parquet (``SearchLog.load`` reads it)."""
    path = tmp_path_factory.mktemp("tiny_data")
    tiny_log.save(path)
    return path


@pytest.fixture(scope="session")
def sim_data_dir(tmp_path_factory):
    """``recipes/make_data.py`` output of the tiny preset: the log of ``tiny_log`` plus the ``stage.json``
    the arena's oracle rebuilds the simulator's users from."""
    path = tmp_path_factory.mktemp("sim_data") / "data"
    write_simulated_data(SimulatorConfig.preset("tiny"), path)
    return path


@pytest.fixture(scope="session")
def oracle(sim_data_dir):
    from eg_grpo.arena.oracle import Oracle

    return Oracle.from_data_dir(sim_data_dir)


# A codebook for the tiny simulated log built from its taxonomy in milliseconds (no encoder, no
# RQ-VAE): SID = (top-level category, leaf category, item rank inside the leaf // 3), clusters of up
# to three similar items, as CQ-SID would give, so evaluation, recall and RL tests see real clusters.
def taxonomy_codebook(log) -> SIDCodebook:
    paths = log.items["category_path"].map(tuple)
    tops = {t: i for i, t in enumerate(sorted({p[0] for p in paths}))}
    leaves = {p: i for i, p in enumerate(sorted(set(paths)))}
    rank = log.items.groupby(paths).cumcount().to_numpy()
    codes = np.stack(
        [paths.map(lambda p: tops[p[0]]).to_numpy(), paths.map(leaves.__getitem__).to_numpy(), rank // 3],
        axis=1,
    )
    sizes = tuple(int(c) + 1 for c in codes.max(axis=0))
    return SIDCodebook(sizes, log.items["item_id"].to_numpy(), codes, method="reference")


@pytest.fixture(scope="session")
def tiny_codebook(tiny_log) -> SIDCodebook:
    return taxonomy_codebook(tiny_log)


@pytest.fixture(scope="session")
def tiny_sid_dir(tiny_codebook, tmp_path_factory):
    """A folder laid out like the output of recipes/build_sids.py (``codebook/`` inside)."""
    path = tmp_path_factory.mktemp("tiny_sids")
    tiny_codebook.save(path / "codebook")
    return path


def _parse_recipe(dataclasses, args):
    """Parses recipe arguments exactly as the command line does (YAML config + overrides)."""
    from trl import TrlParser

    return TrlParser(dataclasses).parse_args_and_config(args=[str(a) for a in args])


@pytest.fixture(scope="session")
def parse_recipe():
    return _parse_recipe


@pytest.fixture(scope="session")
def tiny_sft_dir(tiny_data_dir, tiny_sid_dir, tmp_path_factory):
    """The tiny chain's first half: recipes/sft.py main() with recipes/configs/tiny/sft.yaml."""
    from trl import ModelConfig, SFTConfig

    from recipes.sft import SFTScriptArguments, main

    out = tmp_path_factory.mktemp("tiny_sft") / "sft"
    args = _parse_recipe(
        (SFTScriptArguments, SFTConfig, ModelConfig),
        ["--config", "recipes/configs/tiny/sft.yaml", "--data_dir", tiny_data_dir, "--sid_dir", tiny_sid_dir,
         "--output_dir", out, "--disable_tqdm", "true"],
    )  # fmt: skip
    main(*args)
    return out
