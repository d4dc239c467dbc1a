"""``jobs: N`` in a chain file: the steps after SFT run N at a time, each with its log file and its
share of the cores; an evaluation never starts before its model, the arena only after every one."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

import eg_grpo.pipeline as pipeline
from eg_grpo.pipeline import ChainConfig, StageResult, run_chain, run_stage


def _chain_file(folder: Path, **extra) -> Path:
    tiny = ChainConfig.load("tiny")
    chain = folder / "chain.yaml"
    chain.write_text(yaml.safe_dump({"output_root": str(folder / "out"), "stages": tiny.stages,
                                     "rl_runs": tiny.rl_runs, **extra}))  # fmt: skip
    return chain


def test_jobs_must_be_a_whole_number_of_at_least_one(tmp_path):
    assert ChainConfig.load(_chain_file(tmp_path)).jobs == 1
    assert ChainConfig.load(_chain_file(tmp_path, jobs=2)).jobs == 2
    for bad in (0, 1.5, "2", True):
        with pytest.raises(ValueError, match="jobs must be a whole number"):
            ChainConfig.load(_chain_file(tmp_path, jobs=bad))


@pytest.fixture
def fake_stages(monkeypatch):
    """Replaces each stage process with a short sleep that records when it ran and how it was started."""
    calls, lock = {}, threading.Lock()

    def fake_run_stage(name, stage, config, output_dir, args=None, owner=None, rebuild=False, log=None,
                       threads=None):  # fmt: skip
        start = time.monotonic()
        time.sleep(0.5 if stage == "rl" else 0.05)
        with lock:
            calls[name] = {"start": start, "end": time.monotonic(), "log": log, "threads": threads,
                           "args": dict(args or {})}  # fmt: skip
        return StageResult(name, Path(output_dir), "f", skipped=False)

    monkeypatch.setattr(pipeline, "run_stage", fake_run_stage)
    monkeypatch.setattr("eg_grpo.report.write_report", lambda root, **kw: Path(root) / "report" / "report.md")
    monkeypatch.setattr(pipeline, "cores_available", lambda: 4)
    return calls


def test_two_jobs_run_rl_side_by_side_each_evaluation_after_its_model(fake_stages, tmp_path):
    done = run_chain(_chain_file(tmp_path, jobs=2))
    calls, out = fake_stages, tmp_path / "out"
    runs = ["vanilla_grpo", "eg_grpo", "continued_sft"]
    # the summary lists the steps in the chain's order whatever order they finished in
    assert list(done) == ["data", "sids", "ranker", "sft", *runs, "eval_sft", *(f"eval_{r}" for r in runs),
                          "arena"]  # fmt: skip
    # the first two RL runs overlap in time; nothing after SFT starts before SFT ended
    assert calls["eg_grpo"]["start"] < calls["vanilla_grpo"]["end"]
    assert all(calls[n]["start"] >= calls["sft"]["end"] for n in [*runs, "eval_sft"])
    for run in runs:
        assert calls[f"eval_{run}"]["start"] >= calls[run]["end"]
        assert calls[f"eval_{run}"]["args"]["model_dir"] == out.resolve() / run
    assert calls["arena"]["start"] >= max(c["end"] for n, c in calls.items() if n != "arena")
    # steps beside others: a log file each and half the (4) cores; the rest as before, on the console
    for name in [*runs, "eval_sft", *(f"eval_{r}" for r in runs)]:
        assert calls[name]["log"] == out.resolve() / "logs" / f"{name}.log" and calls[name]["threads"] == 2
    # a step alone gets every core, whatever the launcher exported (accelerate launch: OMP_NUM_THREADS=1)
    for name in ("data", "sids", "ranker", "sft", "arena"):
        assert calls[name]["log"] is None and calls[name]["threads"] == 4


def test_one_job_keeps_the_sequential_order_on_the_console(fake_stages, tmp_path):
    run_chain(_chain_file(tmp_path))
    calls = fake_stages
    order = sorted(calls, key=lambda n: calls[n]["start"])
    assert order == ["data", "sids", "ranker", "sft", "vanilla_grpo", "eg_grpo", "continued_sft", "eval_sft",
                     "eval_vanilla_grpo", "eval_eg_grpo", "eval_continued_sft", "arena"]  # fmt: skip
    assert all(c["log"] is None and c["threads"] == 4 for c in calls.values())


def test_a_failed_parallel_step_stops_what_has_not_started_and_is_reraised():
    started, finished = [], []

    def task(name, seconds, fail=False):
        def run():
            started.append(name)
            time.sleep(seconds)
            if fail:
                raise RuntimeError(f"stage '{name}' failed")
            finished.append(name)

        return run

    # two workers take b and a at once; a fails while b still runs
    tasks = [task("b", 0.6), task("a", 0.2, fail=True), task("c", 0.0), task("d", 0.0)]
    with pytest.raises(RuntimeError, match="stage 'a' failed"):
        pipeline.run_all(tasks, jobs=2)
    # b ran to its end; c and d were never started
    assert sorted(started) == ["a", "b"] and finished == ["b"]


def test_a_logged_stage_writes_its_output_to_the_log_and_shows_the_error_tail(tmp_path, capsys):
    tiny = ChainConfig.load("tiny")
    log = tmp_path / "logs" / "data.log"
    result = run_stage("data", "data", tiny.stages["data"], tmp_path / "data", log=log, threads=1)
    assert (result.output_dir / "stage.json").exists() and not result.skipped
    assert log.stat().st_size > 0
    printed = capsys.readouterr().out
    assert f"[chain] data: output in {log}" in printed and "[chain] data: built in" in printed

    bad = tmp_path / "bad.yaml"
    # parses (so the chain's in-process check passes) but the simulator refuses it in the stage process
    bad.write_text(Path(tiny.stages["data"]).read_text().replace("n_items: 500", "n_items: 0"))
    with pytest.raises(RuntimeError, match=f"fix the error in {tmp_path / 'logs' / 'bad.log'}"):
        run_stage("bad", "data", bad, tmp_path / "bad", log=tmp_path / "logs" / "bad.log", threads=1)
    tail = capsys.readouterr().out
    assert "[chain] bad failed; the end of" in tail and "n_items" in tail


@pytest.fixture
def recorded_rl_stages(fake_stages, monkeypatch):
    """``fake_stages`` whose RL steps write a hand-made stage.json (the tiny settings, or ``settings[name]``)."""
    from stage_records import write_rl_stage

    settings, fake = {}, pipeline.run_stage

    def run_stage(name, stage, config, output_dir, args=None, owner=None, **kw):
        if stage == "rl":
            defaults = {
                "vanilla_grpo": {"num_expert_samples": 0},
                "continued_sft": {"training_objective": "continued_sft"},
            }
            write_rl_stage(output_dir, built_by=owner, **{**defaults.get(name, {}), **settings.get(name, {})})
        return fake(name, stage, config, output_dir, args, owner=owner, **kw)

    monkeypatch.setattr(pipeline, "run_stage", run_stage)
    return settings


@pytest.mark.parametrize(
    ("run", "training", "expected"),
    [("eg_grpo", {"max_steps": 8}, "max_steps: 6 (continued_sft, vanilla_grpo) vs 8 (eg_grpo)"),
     ("continued_sft", {"learning_rate": 1e-4}, "learning_rate: 0.0005 (eg_grpo, vanilla_grpo) vs 0.0001 (continued_sft)"),
     ("continued_sft", {"training_objective": "grpo"}, 'training_objective "grpo" (the label needs "continued_sft")')],
)  # fmt: skip
def test_the_chain_refuses_to_evaluate_rl_runs_that_are_not_comparable(
    recorded_rl_stages, fake_stages, tmp_path, run, training, expected
):
    from eg_grpo.eval.comparability import ComparabilityError

    recorded_rl_stages[run] = training
    with pytest.raises(ComparabilityError) as err:
        run_chain(_chain_file(tmp_path))
    message = str(err.value)
    assert expected in message and "so nothing is evaluated" in message
    assert f"{run}: {Path(ChainConfig.load('tiny').stages[run])}" in message  # the config to fix
    assert "--rebuild" not in message  # the chain built them all: editing the config is enough
    assert (
        not any(n.startswith("eval_") and n != "eval_sft" for n in fake_stages) and "arena" not in fake_stages
    )


def test_the_chain_evaluates_comparable_rl_runs_and_names_runs_it_did_not_build(
    recorded_rl_stages, fake_stages, tmp_path, monkeypatch
):
    from stage_records import write_rl_stage

    from eg_grpo.eval.comparability import ComparabilityError

    done = run_chain(_chain_file(tmp_path))
    assert "eval_eg_grpo" in done and "arena" in done
    # a run folder the chain did not build (a hand-made record of other steps) is named with --rebuild
    eg = tmp_path / "out" / "eg_grpo"
    pipeline_run_stage = pipeline.run_stage

    def keep_foreign(name, stage, config, output_dir, args=None, owner=None, **kw):
        if name == "eg_grpo":
            write_rl_stage(output_dir, built_by=None, max_steps=8)
            return StageResult(name, Path(output_dir), "f", skipped=True)
        return pipeline_run_stage(name, stage, config, output_dir, args, owner=owner, **kw)

    monkeypatch.setattr(pipeline, "run_stage", keep_foreign)
    with pytest.raises(ComparabilityError, match=r"max_steps: .* vs 8 \(eg_grpo\)(.|\n)*`--rebuild eg_grpo`"):
        run_chain(_chain_file(tmp_path))
    assert eg.is_dir()
