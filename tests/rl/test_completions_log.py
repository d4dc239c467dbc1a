"""Readable completions (``eg/completions``) and the run's lineage, read back from an offline W&B run of a tiny
one-step EG-GRPO run with experts spliced in; trackio (not installed) is a stub module."""

from __future__ import annotations

import glob
import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_rl import config, read_offline_run

from eg_grpo.rl.completions_log import NOT_A_SID, ClusterTitles, log_sid_completions
from eg_grpo.sid.tokens import parse_sid_text, sid_to_text
from eg_grpo.tracking import LineageToTracker

REWARDS = [{"name": "sid_match", "weight": 1.0}, {"name": "valid_sid", "weight": 0.5}]


@pytest.fixture(scope="module")
def tiny_run(tiny_data_dir, tiny_sid_dir, tiny_sft_dir, tmp_path_factory):
    """One logged step (G=4, one expert per group, 3 rows asked for the table) to an offline W&B run."""
    import wandb
    from trl import ModelConfig

    from eg_grpo.rl.inputs import EGGRPOScriptArguments
    from eg_grpo.rl.stage import build_trainer

    tmp_path = tmp_path_factory.mktemp("completions_log")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_TAGS", "WANDB_RUN_GROUP"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("WANDB_DIR", str(tmp_path))
        monkeypatch.setenv("WANDB_SILENT", "true")
        script = EGGRPOScriptArguments(
            data_dir=str(tiny_data_dir), rewards=REWARDS, max_train_rows=16, chain=False
        )
        args = config(tmp_path, tiny_sid_dir, report_to=["wandb"], max_steps=1, logging_steps=1, save_strategy="no",
                      num_expert_samples=1, disable_tqdm=True, run_name="tiny-eg", log_completions=True,
                      num_completions_to_print=3)  # fmt: skip
        trainer = build_trainer(script, args, ModelConfig(model_name_or_path=str(tiny_sft_dir)))
        generated = []  # each generation's rows, in order, as the trainer produced them
        score = trainer._generate_and_score_completions

        def recording(inputs):
            out = score(inputs)
            generated.append(
                (out["expert_mask"].tolist(), out["completion_ids"].tolist(), [r["query"] for r in inputs])
            )
            return out

        monkeypatch.setattr(trainer, "_generate_and_score_completions", recording)
        try:
            trainer.train()
            run_id = wandb.run.id
        finally:
            wandb.finish()
            wandb.teardown()  # stops the W&B service, which flushes the run files
    (folder,) = glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{run_id}"))
    return SimpleNamespace(trainer=trainer, folder=Path(folder), generated=generated, run_id=run_id)


def _table(folder: Path, key: str) -> pd.DataFrame:
    # every `log` call logs the table, the end-of-training summary too: all hold the one step's rows here
    paths = sorted(glob.glob(str(folder / "files" / "media" / "table" / f"{key}_*.table.json")))
    assert paths, f"no {key} table in {folder}"
    data = json.loads(Path(paths[0]).read_text())
    return pd.DataFrame(data["data"], columns=data["columns"])


def test_the_offline_run_holds_a_readable_completions_table(tiny_run, tiny_log, tiny_codebook):
    table = _table(tiny_run.folder, "eg/completions")
    assert list(table.columns) == ["step", "query", "sid", "items", "is_expert", "sid_match", "valid_sid",
                                   "reward", "advantage"]  # fmt: skip
    assert len(table) == 4  # num_completions_to_print=3, rounded up to one whole group of G=4
    expert_mask, completion_ids, queries = tiny_run.generated[0]
    vocab = tiny_run.trainer.sid_vocab
    # row for row, the SIDs and expert flags the trainer generated and spliced
    assert table["sid"].tolist() == [sid_to_text(vocab.decode(ids)) for ids in completion_ids[:4]]
    assert table["is_expert"].tolist() == expert_mask[:4]
    assert table["is_expert"].tolist() == [
        False,
        False,
        False,
        True,
    ]  # the group's last slot holds the expert
    assert table["query"].tolist() == queries[:4] and table["query"].str.len().min() > 0
    titles = dict(zip(tiny_log.items["item_id"], tiny_log.items["title"]))
    for sid, items in zip(table["sid"], table["items"]):
        assert sid != NOT_A_SID  # constrained decoding: every row a SID of the codebook
        cluster = [titles[i] for i in tiny_codebook.items_of(parse_sid_text(sid))]
        shown = items.split(" | ")
        assert len(shown) == min(3, len(cluster)) and set(shown) <= set(cluster)
    np.testing.assert_allclose(table["reward"], table["sid_match"] + 0.5 * table["valid_sid"])
    assert table.loc[table["is_expert"], "sid_match"].min() > 0  # a logged SID matches the logs


def test_trls_own_table_gains_the_readable_columns(tiny_run):
    table = _table(tiny_run.folder, "completions")
    assert {"prompt", "completion", "query", "sid", "items", "is_expert", "reward"} <= set(table.columns)
    expert_mask = tiny_run.generated[0][0]
    assert table["is_expert"].tolist() == expert_mask  # the whole generation batch, in order


def test_trackio_gets_the_lineage_and_the_table_wandb_got(tiny_run, monkeypatch):
    """trackio is an optional tracker: a stub module stands in for it, as transformers' TrackioCallback and TRL
    would have started its run."""
    stub = types.ModuleType("trackio")
    stub.config, stub.logged = {}, []
    stub.Table = lambda dataframe: dataframe
    stub.log = stub.logged.append
    monkeypatch.setitem(sys.modules, "trackio", stub)
    (path,) = glob.glob(str(tiny_run.folder / f"run-{tiny_run.run_id}.wandb"))
    _, wandb_config = read_offline_run(path)
    trainer = tiny_run.trainer
    (lineage,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, LineageToTracker)]
    state = SimpleNamespace(is_world_process_zero=True)
    lineage.on_train_begin(SimpleNamespace(report_to=["trackio"]), state, None)
    assert stub.config["eg_grpo"] == wandb_config["eg_grpo"]
    logged = stub.config["eg_grpo"]
    assert logged["tags"][0] == "eg" and logged["num_expert_samples"] == 1
    assert logged["training_objective"] == "grpo" and [r["name"] for r in logged["rewards"]] == [
        "sid_match",
        "valid_sid",
    ]
    assert set(logged["inputs"]) >= {"data", "sids", "model"} and logged["stage_fingerprint"]

    monkeypatch.setattr(trainer.args, "report_to", ["trackio"])
    frame = log_sid_completions(trainer)
    assert len(stub.logged) == 1 and stub.logged[0]["eg/completions"] is frame
    assert frame["is_expert"].tolist() == [False, False, False, True]


def test_cluster_titles_put_the_most_clicked_items_first(tiny_log, tiny_codebook):
    sid = next(s for s in map(tuple, tiny_codebook.valid_sids()) if len(tiny_codebook.items_of(s)) == 3)
    first, second, third = tiny_codebook.items_of(sid).tolist()
    titles = dict(zip(tiny_log.items["item_id"], tiny_log.items["title"]))
    ranked = ClusterTitles(tiny_codebook, tiny_log.items, {third: 5.0, second: 1.0}, k=3)
    assert ranked(sid) == [titles[third], titles[second], titles[first]]  # unscored last
    assert ClusterTitles(tiny_codebook, tiny_log.items, {}, k=2)(sid) == [titles[first], titles[second]]
    assert ranked(None) == []
