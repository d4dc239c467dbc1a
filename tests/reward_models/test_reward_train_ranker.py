"""recipes/train_ranker.py: the YAML configs parse, and the stage writes a loadable ranker and its metrics."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from eg_grpo.io import read_stage
from reward_models.ranker import RankingSimulator

REPO = Path(__file__).resolve().parents[2]


def _recipe():
    spec = importlib.util.spec_from_file_location("train_ranker_recipe", REPO / "recipes" / "train_ranker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_configs_parse(preset):
    from trl import TrlParser

    recipe = _recipe()
    config = REPO / "recipes" / "configs" / preset / "ranker.yaml"
    assert config.read_text().startswith("# python recipes/train_ranker.py --config")
    (args,) = TrlParser((recipe.TrainRankerArguments,)).parse_args_and_config(
        ["--config", str(config), "--data_dir", "D", "--output_dir", "O"]
    )
    assert (args.data_dir, args.output_dir, args.model_type) == ("D", "O", "logistic")


def test_stage_writes_ranker_metrics_and_marker(tiny_data_dir, tiny_log, tmp_path):
    recipe = _recipe()
    out = tmp_path / "ranker"
    args = recipe.TrainRankerArguments(
        data_dir=str(tiny_data_dir), output_dir=str(out), model_type="logistic"
    )
    metrics = recipe.main(args)
    written = json.loads((out / "ranker_metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    for key in ("click_auc", "purchase_auc", "oracle_click_auc", "relevance_auc"):
        assert 0.5 < written[key] <= 1.0, key
    assert written["split"] == "valid"
    assert sorted(p.name for p in out.iterdir()) == ["ranker.pkl", "ranker_metrics.json", "stage.json"]
    assert not list(tmp_path.glob(".ranker.partial*"))  # written atomically, nothing left over
    sim = RankingSimulator.load(out, tiny_log)
    assert sim.evaluate(tiny_log, "valid")["click_auc"] == pytest.approx(written["click_auc"])
    record = read_stage(out)
    assert record["stage"] == "ranker" and set(record["inputs"]) == {"data"}
