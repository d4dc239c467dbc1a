"""The tiny chain's figures are stable for a seed: a code change that moves them (a reordered RNG
draw, another encoder text, a changed default) fails here instead of surfacing as figures a fresh
clone cannot reproduce. Expected values were computed by running the stages (CPU, 1 torch thread);
the SID count of every shipped tiny SID config is pinned in tests/sid/test_methods.py."""

import json

import pytest


def test_tiny_sft_train_loss_is_stable(tiny_sft_dir):
    """recipes/configs/tiny/sft.yaml on the tiny log and its taxonomy SIDs (the session's SFT fixture)."""
    metrics = json.loads((tiny_sft_dir / "sft_metrics.json").read_text())
    assert metrics["train_rows"] == EXPECTED_SFT["train_rows"]
    assert metrics["train_loss"] == pytest.approx(EXPECTED_SFT["train_loss"], abs=1e-4)


EXPECTED_SFT = {"train_rows": 712, "train_loss": 3.269058448680933}


# The tiny chain's first half (recipes/configs/tiny/chain.yaml: data, CQ-SIDs, SFT, evaluation of the
# SFT model), each stage its recipe in a subprocess, as a user runs it. The figures are exact where the
# encoder gives these vectors to the bit (same CPU kernels); elsewhere the RQ-VAE build may take
# another of its outcomes (tests/sid/test_methods.py), so only the SID count's measured band holds.
EXPECTED_CHAIN = {"num_sids": 233, "sft_train_loss": 3.3442256485206494, "hits@10": 25, "num_examples": 90}
CHAIN_VECTORS_SHA256 = "6a05b67e89e7dd30"  # MiniLM vectors of the tiny items on the machine that wrote this


@pytest.mark.slow
def test_tiny_chain_figures_are_stable(tmp_path):
    from eg_grpo.pipeline import run_stage

    cfg = "recipes/configs/tiny"
    data = run_stage("data", "data", f"{cfg}/data.yaml", tmp_path / "data").output_dir
    sids = run_stage("sids", "sids", f"{cfg}/sids.yaml", tmp_path / "sids", {"data_dir": data}).output_dir
    sft = run_stage(
        "sft", "sft", f"{cfg}/sft.yaml", tmp_path / "sft", {"data_dir": data, "sid_dir": sids}
    ).output_dir
    evaluation = run_stage("eval", "evaluate", f"{cfg}/evaluate.yaml", tmp_path / "eval",
                           {"data_dir": data, "sid_dir": sids, "model_dir": sft}).output_dir  # fmt: skip
    stats = json.loads((sids / "stats.json").read_text())
    sft_metrics = json.loads((sft / "sft_metrics.json").read_text())
    results = json.loads((evaluation / "eval_results.json").read_text())
    assert results["num_examples"] == EXPECTED_CHAIN["num_examples"]
    if stats["item_vectors_sha256"] != CHAIN_VECTORS_SHA256:
        from sid.test_methods import SHIPPED, _within

        assert _within(stats["num_sids"], SHIPPED[("sids", ())][0], rel=0.05)
        pytest.skip("the encoder's vectors differ in their last bits here: exact figures not comparable")
    assert stats["num_sids"] == EXPECTED_CHAIN["num_sids"]
    assert sft_metrics["train_loss"] == pytest.approx(EXPECTED_CHAIN["sft_train_loss"], abs=1e-4)
    assert round(results["hr@10"] * results["num_examples"]) == EXPECTED_CHAIN["hits@10"]
