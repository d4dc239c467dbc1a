"""The stage contract as a new user meets it: content lineage, no silent overwrite, typo'd paths, --help.

Each test replays the steps that once went wrong: SFT said "up to date" after the SIDs changed, a
chain retrained a hand-made model, a mistyped --data_dir became a new dataset, and a codebook of a
same-size dataset with another seed was accepted by RL and evaluation.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from trl import ModelConfig

from eg_grpo.cli import StageParser
from eg_grpo.data.simulator import SimulatorConfig
from eg_grpo.io import StageConflict, atomic_dir, read_stage, write_stage
from eg_grpo.pipeline import ChainConfig, ensure_upstream, run_stage
from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.rl.inputs import EGGRPOScriptArguments
from eg_grpo.rl.stage import build_trainer
from eg_grpo.sft.stage import run as run_sft
from eg_grpo.sft.stage import stage_arguments as sft_arguments
from eg_grpo.sid.build import SIDConfig
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.stages.data import MakeDataArguments, run_simulated
from eg_grpo.stages.evaluate import EvaluateArguments
from eg_grpo.stages.evaluate import run as run_evaluate
from eg_grpo.stages.sids import BuildSidsArguments, sids_stage_record
from tests.conftest import taxonomy_codebook

TINY = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "tiny"


def make_data(folder: Path, seed: int = 0) -> Path:
    """The data stage on the tiny preset (well under a second)."""
    fields = dataclasses.asdict(SimulatorConfig.preset("tiny", seed=seed))
    run_simulated(MakeDataArguments(**fields, output_dir=str(folder)))
    return folder


def make_sids(folder: Path, data_dir: Path, codebook: SIDCodebook, seed: int = 42) -> Path:
    """A SID folder exactly as the SID stage writes it, with a taxonomy codebook instead of a trained one."""
    record = sids_stage_record(
        BuildSidsArguments(data_dir=str(data_dir), output_dir=str(folder)), SIDConfig(seed=seed)
    )
    with atomic_dir(folder) as tmp:
        codebook.save(tmp / "codebook")
        write_stage(tmp, record)
    return folder


def sft_argv(data_dir, sid_dir, out, *extra) -> list[str]:
    return ["--config", TINY / "sft.yaml", "--data_dir", data_dir, "--sid_dir", sid_dir, "--output_dir", out,
            "--num_train_epochs", "1", "--max_train_rows", "64", "--disable_tqdm", "true", *extra]  # fmt: skip


def parse_sft(*argv):
    return StageParser(sft_arguments()).parse_args_and_config(args=[str(a) for a in sft_argv(*argv)])


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    """Data (seed 0), same-size data of seed 1, SIDs built from seed 0 and an SFT model trained on them."""
    root = tmp_path_factory.mktemp("lineage")
    data0, data1 = make_data(root / "data0"), make_data(root / "data1", seed=1)
    from eg_grpo.data.schema import SearchLog

    sids = make_sids(root / "sids", data0, taxonomy_codebook(SearchLog.load(data0)))
    run_sft(*parse_sft(data0, sids, root / "sft"))
    return {"data0": data0, "data1": data1, "sids": sids, "sft": root / "sft", "root": root}


def shifted(codebook: SIDCodebook) -> SIDCodebook:
    """The same clusters with other codes at the last level: every item's SID changes."""
    codes = codebook.codes.copy()
    size = codebook.codebook_sizes[-1]
    codes[:, -1] = (codes[:, -1] + 1) % size
    return SIDCodebook(codebook.codebook_sizes, codebook.item_ids, codes, method="reference")


def test_sft_is_not_up_to_date_after_the_sid_config_seed_changed(lineage, tmp_path):
    sids, sft = tmp_path / "sids", tmp_path / "sft"
    shutil.copytree(lineage["sids"], sids)
    shutil.copytree(lineage["sft"], sft)
    assert run_sft(*parse_sft(lineage["data0"], sids, sft)) == {}  # same content: up to date
    before = (sft / "model.safetensors").read_bytes()
    old = SIDCodebook.load(sids / "codebook")
    make_sids(sids, lineage["data0"], shifted(old), seed=7)  # the SID stage re-run with another seed
    with pytest.raises(StageConflict, match=r"(?s)input sids: .*--overwrite true"):
        run_sft(*parse_sft(lineage["data0"], sids, sft))
    assert (sft / "model.safetensors").read_bytes() == before
    # RL refuses the stale model with the new codebook instead of training it
    script = EGGRPOScriptArguments(data_dir=str(lineage["data0"]), chain=False, max_train_rows=16)
    args = EGGRPOConfig(output_dir=str(tmp_path / "rl"), sid_dir=str(sids), num_generations=4,
                        per_device_train_batch_size=8, use_cpu=True, report_to="none")  # fmt: skip
    with pytest.raises(ValueError, match="trained with other SIDs"):
        build_trainer(script, args, ModelConfig(model_name_or_path=str(sft)))


def test_a_hand_built_sft_folder_is_not_retrained_by_the_chain(lineage, tmp_path):
    sft = tmp_path / "sft"
    shutil.copytree(lineage["sft"], sft)  # trained by hand: 1 epoch, no chain owns it
    assert read_stage(sft)["built_by"] is None
    before = (sft / "model.safetensors").read_bytes()
    config = tmp_path / "sft.yaml"
    config.write_text((TINY / "sft.yaml").read_text().replace("num_train_epochs: 3", "num_train_epochs: 2"))
    args = {"data_dir": lineage["data0"], "sid_dir": lineage["sids"], "max_train_rows": 64}
    with pytest.raises(
        StageConflict, match=r"(?s)config.training.num_train_epochs: 1 -> 2.*rebuild=\['sft'\]"
    ):
        run_stage("sft", "sft", config, sft, args, owner=f"chain:{tmp_path}")
    assert (sft / "model.safetensors").read_bytes() == before
    # a folder with files but no stage.json (copied, or built by an older version) is kept as well
    (sft / "stage.json").unlink()
    with pytest.raises(StageConflict, match="no stage.json: it was built by hand"):
        run_stage("sft", "sft", config, sft, args, owner=f"chain:{tmp_path}")


def test_a_mistyped_data_dir_is_an_error_not_a_new_dataset(lineage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data_dir dta does not exist .*builds outputs/tiny/data"):
        ensure_upstream(
            "dta", str(lineage["sids"]), str(lineage["sft"]), None, {"data": str(TINY / "data.yaml")}
        )
    assert not (tmp_path / "dta").exists()
    with pytest.raises(FileNotFoundError, match="data_dir dta does not exist"):
        run_sft(*parse_sft("dta", lineage["sids"], tmp_path / "sft"))
    assert not (tmp_path / "sft").exists()


def test_a_same_size_dataset_of_another_seed_is_refused_by_evaluation_and_rl(lineage, tmp_path):
    from eg_grpo.data.schema import SearchLog

    items0, items1 = (SearchLog.load(lineage[k]).items["item_id"] for k in ("data0", "data1"))
    assert np.array_equal(items0, items1)  # ids 0..N-1 in both: the item-set check cannot tell them apart
    args = EvaluateArguments(data_dir=str(lineage["data1"]), sid_dir=str(lineage["sids"]),
                             model_dir=str(lineage["sft"]), output_dir=str(tmp_path / "eval"), device="cpu")  # fmt: skip
    from eg_grpo.eval.evaluator import EvalSettings

    with pytest.raises(ValueError, match=r"(?s)built from other data.*build_sids.py"):
        run_evaluate(args, EvalSettings(num_beams=5, ks=[1, 5], beam_sizes=[5], recall_num_items=[10]))
    assert not (tmp_path / "eval").exists()
    script = EGGRPOScriptArguments(data_dir=str(lineage["data1"]), chain=False, max_train_rows=16)
    config = EGGRPOConfig(output_dir=str(tmp_path / "rl"), sid_dir=str(lineage["sids"]), num_generations=4,
                          per_device_train_batch_size=8, use_cpu=True, report_to="none")  # fmt: skip
    with pytest.raises(ValueError, match="built from other data"):
        build_trainer(script, config, ModelConfig(model_name_or_path=str(lineage["sft"])))


def test_presets_resolve_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    chain = ChainConfig.load("tiny")
    assert set(chain.stages) >= {"data", "sids", "ranker", "sft", "evaluate", "eg_grpo", "vanilla_grpo"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in chain.stages.values())
    # the presets travel inside the package (a non-editable install has no recipes/ folder)
    from importlib import resources

    assert resources.files("eg_grpo").joinpath("configs", "tiny", "chain.yaml").is_file()
    with pytest.raises(FileNotFoundError, match="chain file nope.yaml not found"):
        ChainConfig.load("nope.yaml")


def test_help_lists_config_and_our_options_before_inherited_ones():
    text = StageParser((EGGRPOScriptArguments, EGGRPOConfig, ModelConfig)).format_help()
    assert "--config YAML" in text
    ours = [text.index(f"--{name} ") for name in ("data_dir", "rewards", "num_expert_samples", "sid_dir")]
    inherited = text.index("--learning_rate ")
    assert max(ours) < inherited, "EG-GRPO options must come before TRL's"
    assert text.index("EGGRPOConfig options") < text.index("options inherited from TRL")


def test_evaluation_writes_its_folder_with_lineage_and_reports_to_the_tracked_run(
    lineage, tmp_path, monkeypatch
):
    import wandb

    from eg_grpo.eval.evaluator import EvalSettings
    from eg_grpo.io import folder_fingerprint

    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "eval"
    args = EvaluateArguments(data_dir=str(lineage["data0"]), sid_dir=str(lineage["sids"]),
                             model_dir=str(lineage["sft"]), output_dir=str(out), device="cpu", report_to="wandb")  # fmt: skip
    settings = EvalSettings(num_beams=5, ks=[1, 5], beam_sizes=[5], recall_num_items=[10], max_examples=8)
    run = wandb.init(mode="offline", dir=str(tmp_path), project="eg-grpo")
    try:
        results = run_evaluate(args, settings)
        summary = dict(run.summary)
    finally:
        wandb.finish()
        wandb.teardown()
    assert summary["test/hr@5"] == results["hr@5"] and summary["test/num_examples"] == 8
    record = read_stage(out)
    assert record["stage"] == "evaluate" and record["inputs"]["model"]["fingerprint"] == folder_fingerprint(
        lineage["sft"]
    )
    assert {p.name for p in out.iterdir()} == {
        "eval_results.json",
        "per_request.csv",
        "beam_sweep.png",
        "stage.json",
    }
    assert run_evaluate(args, settings) == {}  # current: nothing to do
    with pytest.raises(StageConflict, match="config.settings.num_beams: 5 -> 10"):
        run_evaluate(args, dataclasses.replace(settings, num_beams=10))
