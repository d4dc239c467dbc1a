"""Shared fixtures: a tiny simulated search log, in memory and on disk (built once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from eg_grpo.data.schema import SearchLog
from eg_grpo.data.simulator import SimulatorConfig, simulate

# Tests import recipes by path; appended (not prepended) so `eg_grpo` stays the package, never
# the launcher recipes/eg_grpo.py, and `import _recipe_path` inside a recipe resolves.
sys.path.append(str(Path(__file__).resolve().parents[1] / "recipes"))


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
