"""The evaluation harness and the tiny chain sft -> evaluate through the recipes' main functions."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from eg_grpo.data.schema import SchemaError
from eg_grpo.data.sft_dataset import clicked_items, target_items
from eg_grpo.eval.evaluator import EvalSettings, evaluate_model
from eg_grpo.modeling import build_tiny_model_and_tokenizer, load_model_and_tokenizer
from eg_grpo.sid.codebook import SIDCodebook

KS = [1, 3, 5, 10, 20]


def test_tiny_chain_sft_then_evaluate(
    parse_recipe, tiny_log, tiny_data_dir, tiny_sid_dir, tiny_sft_dir, tiny_codebook, tmp_path
):
    from recipes.evaluate import EvaluateArguments, main

    # the SFT artifact: a standalone model + tokenizer with the SID tokens, and its stage marker
    assert (tiny_sft_dir / "stage.json").exists() and (tiny_sft_dir / "tokenizer.json").exists()
    sft_metrics = json.loads((tiny_sft_dir / "sft_metrics.json").read_text())
    losses = [h["loss"] for h in sft_metrics["log_history"] if "loss" in h]
    assert losses[-1] < 0.6 * losses[0]  # it learned

    out = tmp_path / "eval"
    args = parse_recipe(
        (EvaluateArguments, EvalSettings),
        ["--config", "recipes/configs/tiny/evaluate.yaml", "--data_dir", tiny_data_dir, "--sid_dir", tiny_sid_dir,
         "--model_dir", tiny_sft_dir, "--output_dir", out],
    )  # fmt: skip
    main(*args)
    results = json.loads((out / "eval_results.json").read_text())
    assert (out / "beam_sweep.png").stat().st_size > 10_000
    # per-request ranks: one row per evaluated request, and they recount HR@K / NDCG@K exactly
    ranks = pd.read_csv(out / "per_request.csv")
    assert len(ranks) == results["num_examples"] and ranks["request_id"].is_unique
    r = ranks["target_rank"].to_numpy()
    for k in KS:
        assert results[f"hr@{k}"] == pytest.approx(((r >= 0) & (r < k)).mean())
        assert results[f"ndcg@{k}"] == pytest.approx(
            np.where((r >= 0) & (r < k), 1 / np.log2(np.maximum(r, 0) + 2), 0).mean()
        )
    for k in KS:  # the per-request alignment columns average to the reported clk@K / exp@K / pvr@K
        for key in (f"clk@{k}", f"exp@{k}", f"pvr@{k}"):
            assert ranks[key].mean() == pytest.approx(results[key])
        assert set(ranks[f"clk@{k}"].unique()) <= {0.0, 1.0} and ranks[f"pvr@{k}"].between(0, 1).all()
    assert (ranks["clk@1"] <= ranks["clk@5"]).all() and (ranks["pvr@1"] <= ranks["pvr@5"]).all()
    assert "per_request" not in results
    test_ids = tiny_log.split("test")["request_id"]
    assert results["num_examples"] == len(target_items(tiny_log, test_ids)) > 0
    for k in KS:
        assert 0.0 <= results[f"ndcg@{k}"] <= results[f"hr@{k}"] <= 1.0
    assert [results[f"hr@{k}"] for k in KS] == sorted(results[f"hr@{k}"] for k in KS)
    assert results["valid_sid_rate"] == 1.0 and results["beam_fill_rate"] == 1.0
    for b in (5, 10, 20):
        assert 0.0 <= results[f"semantic_hitrate@{b}"] <= 1.0
        assert results[f"click_hitrate@{b}"] >= 0.0
    recalls = [results[f"recall@{n}_items"] for n in (10, 20, 50, 100)]
    assert recalls == sorted(recalls)
    assert results["distinct_sids"] >= 1 and results["seconds"] > 0

    # the trained model beats the same architecture untrained on the same split
    untrained, tok, _ = build_tiny_model_and_tokenizer(
        ["history query sid"] * 10, tiny_codebook.codebook_sizes
    )
    base = evaluate_model(
        untrained, tok, tiny_log, tiny_codebook, EvalSettings(num_beams=20, beam_sizes=[10])
    )
    assert results["hr@10"] > max(0.15, base["hr@10"] + 0.05)


def test_metrics_agree_with_a_recount(tiny_log, tiny_codebook, tiny_sft_dir):
    model, tok = load_model_and_tokenizer(str(tiny_sft_dir))
    settings = EvalSettings(split="valid", num_beams=20, ks=[1, 10], beam_sizes=[5, 20], rerun_beam_sizes=False,
                            recall_num_items=[30], max_examples=40)  # fmt: skip
    r = evaluate_model(model, tok, tiny_log, tiny_codebook, settings)
    assert r["num_examples"] == 40
    # one beam read at two widths: a wider prefix can only hit more
    assert r["click_hitrate@5"] <= r["click_hitrate@20"]
    assert r["hr@10"] <= r["click_hitrate@20"]  # target is one of the clicked items
    assert r["items@5"] <= r["items@20"]
    assert r["beam_search_seconds"].keys() == {"20"}  # no rerun per width


def test_rerun_beam_sizes_runs_each_width(tiny_log, tiny_codebook, tiny_sft_dir):
    model, tok = load_model_and_tokenizer(str(tiny_sft_dir))
    settings = EvalSettings(split="valid", num_beams=10, ks=[1, 10], beam_sizes=[1, 10], max_examples=10)
    r = evaluate_model(model, tok, tiny_log, tiny_codebook, settings)
    assert set(r["beam_search_seconds"]) == {"1", "10"}
    # beam 1 is greedy decoding (its own run), no better than the width-10 beam's top 10
    assert r["click_hitrate@1"] <= r["click_hitrate@10"]


def test_bad_inputs_fail_before_decoding(tiny_log, tiny_codebook, tiny_sft_dir):
    model, tok = load_model_and_tokenizer(str(tiny_sft_dir))
    # a tokenizer without the SID tokens
    plain_model, plain_tok, _ = build_tiny_model_and_tokenizer(["history sid"] * 10, (2, 2, 2))
    with pytest.raises(ValueError, match="cannot spell the SIDs"):
        evaluate_model(plain_model, plain_tok, tiny_log, tiny_codebook)
    # a codebook from another dataset (other item ids)
    other = SIDCodebook(tiny_codebook.codebook_sizes, tiny_codebook.item_ids + 10_000, tiny_codebook.codes)
    with pytest.raises(ValueError, match="another dataset"):
        evaluate_model(model, tok, tiny_log, other)
    # a split with no rows
    log = type(tiny_log)(tiny_log.items, tiny_log.requests.assign(split="train"), tiny_log.impressions)
    with pytest.raises(SchemaError, match="split 'test' has no rows"):
        evaluate_model(model, tok, log, tiny_codebook)


def test_semantic_hitrate_matches_ground_truth(tiny_log, tiny_codebook, tiny_sft_dir):
    """Recount semantic_hitrate@5 for a few requests straight from ground_truth.relevance."""
    from eg_grpo.data import ground_truth
    from eg_grpo.data.sft_dataset import request_prompts
    from eg_grpo.decoding import SIDTrie, generate_sids
    from eg_grpo.sid.tokens import SIDVocab

    model, tok = load_model_and_tokenizer(str(tiny_sft_dir))
    settings = EvalSettings(split="test", num_beams=5, ks=[1, 5], beam_sizes=[5], max_examples=8, seed=3)
    r = evaluate_model(model, tok, tiny_log, tiny_codebook, settings)
    requests = tiny_log.split("test")
    requests = requests[requests["request_id"].isin(target_items(tiny_log, requests["request_id"]).index)]
    rows = requests.iloc[np.sort(np.random.default_rng(3).choice(len(requests), 8, replace=False))]
    vocab = SIDVocab(tok, tiny_codebook.codebook_sizes)
    trie = SIDTrie.from_sid_token_ids(
        tiny_codebook.sid_token_ids(vocab), model.get_output_embeddings().weight.shape[0]
    )
    with torch.no_grad():
        cands = generate_sids(model, tok, request_prompts(tiny_log, rows, tiny_codebook, tok), trie, num=5)
    shares = []
    for rid, cs in zip(rows["request_id"], cands):
        sids = [vocab.decode(c.token_ids) for c in cs]
        rel = [ground_truth.relevance(tiny_log, rid, tiny_codebook.items_of(s)).max() >= 2 for s in sids]
        shares.append(np.mean(rel))
    assert r["semantic_hitrate@5"] == pytest.approx(np.mean(shares))
    clicked = clicked_items(tiny_log, rows["request_id"]).tolist()
    assert all(len(c) >= 1 for c in clicked)


def test_paper_metrics_agree_with_the_cluster_metrics(tiny_log, tiny_codebook, tiny_sft_dir):
    from eg_grpo.eval.evaluator import exposed_items, item_popularity

    model, tok = load_model_and_tokenizer(str(tiny_sft_dir))
    settings = EvalSettings(split="valid", num_beams=10, ks=[1, 10], beam_sizes=[1, 10], rerun_beam_sizes=False,
                            recall_num_items=[10], item_budgets=[1, 5, 10_000], max_examples=40)  # fmt: skip
    r = evaluate_model(model, tok, tiny_log, tiny_codebook, settings)
    for k in (1, 10):
        # one beam read at width k: clk@K is the click hit rate of its first K clusters
        assert r[f"clk@{k}"] == r[f"click_hitrate@{k}"]
        # every clicked item was shown, so an exposure hit is at least as frequent as a click hit
        assert r[f"clk@{k}"] <= r[f"exp@{k}"] <= 1.0
        assert 0.0 < r[f"pvr@{k}"] <= r[f"exp@{k}"]
    assert r["pvr@1"] < r["pvr@10"]
    for b in (1, 10):
        # a budget larger than any beam's items cuts nothing; a bigger budget never hits less
        assert r[f"budget_hitrate@{b}_top10000"] == r[f"click_hitrate@{b}"]
        assert (
            r[f"budget_hitrate@{b}_top1"]
            <= r[f"budget_hitrate@{b}_top5"]
            <= r[f"budget_hitrate@{b}_top10000"]
        )
    assert r["sweep"]["10"]["budget_hitrate_top5"] == r["budget_hitrate@10_top5"]
    # the item score reads the train split only: an item shown only outside train scores 0
    ids, scores = item_popularity(tiny_log)
    train = tiny_log.requests.loc[tiny_log.requests["split"] == "train", "request_id"]
    in_train = set(tiny_log.impressions.loc[tiny_log.impressions["request_id"].isin(train), "item_id"])
    assert all(s == 0 for i, s in zip(ids.tolist(), scores.tolist()) if i not in in_train)
    rid = int(tiny_log.impressions["request_id"].iloc[0])
    shown = tiny_log.impressions.loc[tiny_log.impressions["request_id"] == rid, "item_id"]
    assert sorted(exposed_items(tiny_log, [rid])[0].tolist()) == sorted(shown.tolist())
