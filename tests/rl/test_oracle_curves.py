"""Reward hacking in view (eg_grpo.rl.oracle_curves): the oracle figures of the policy's beam during RL are the
arena's, their sign is right, real data logs nothing, the learned reward is the rewards' weighted sum, and
compare / the report draw both side by side."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest

from eg_grpo.arena.channels import Channel, OracleChannel
from eg_grpo.arena.oracle import Oracle
from eg_grpo.data.rl_dataset import build_rl_dataset
from eg_grpo.data.schema import SearchLog
from eg_grpo.data.sft_dataset import check_tokenizer_has_sids
from eg_grpo.eval.slices import in_oracle_slice
from eg_grpo.modeling import load_model_and_tokenizer
from eg_grpo.rl.callbacks import console_line
from eg_grpo.rl.oracle_curves import (
    LEARNED_KEY,
    LearnedView,
    OracleCurves,
    OracleEvalSettings,
    OracleFunnel,
    load_oracle,
    oracle_keys,
)


@pytest.fixture(scope="module")
def policy(tiny_sft_dir, tiny_codebook):
    model, tokenizer = load_model_and_tokenizer(str(tiny_sft_dir))
    model.eval()
    return model, tokenizer, check_tokenizer_has_sids(tokenizer, tiny_codebook)


def _valid_rows(log, codebook, vocab, tokenizer):
    return build_rl_dataset(log, codebook, vocab, tokenizer, split="valid", require_expert=False).to_list()


class _Reward:
    """A plain reward callable: the SID's first code, ``None`` (does not apply) for odd request ids."""

    __name__ = "first_code"

    def __init__(self, vocab):
        self.vocab = vocab

    def __call__(self, prompts, completions, completion_ids, request_id, **columns):
        assert len(prompts) == len(completions) == len(completion_ids) == len(request_id)
        return [
            None if r % 2 else float(self.vocab.decode(ids)[0]) for ids, r in zip(completion_ids, request_id)
        ]


def test_the_callbacks_figures_are_the_arenas_supplement_arm(oracle, sim_data_dir, tiny_sid_dir, tiny_sft_dir,
                                                             tiny_codebook, policy, tmp_path):  # fmt: skip
    from eg_grpo.arena import ArenaArguments
    from eg_grpo.arena.run import build_channels, play_arena, recall_all

    model, tokenizer, vocab = policy
    rows = _valid_rows(oracle.log, tiny_codebook, vocab, tokenizer)  # every valid request has impressions
    # beam 20: more cluster items than the quota of 24, so the order inside a cluster decides the cut
    settings = OracleEvalSettings(split="valid", num_requests=len(rows), beam=20)
    funnel = OracleFunnel(oracle, np.array([r["request_id"] for r in rows]), settings)
    learned = LearnedView(rows, [_Reward(vocab)], [1.0], ["first_code"], vocab, tokenizer)
    trainer = SimpleNamespace(processing_class=tokenizer, codebook=tiny_codebook)
    figures = OracleCurves(trainer, funnel, learned, every=1).figures(model)

    args = ArenaArguments(data_dir=str(sim_data_dir), output_dir=str(tmp_path / "arena"), sid_dir=str(tiny_sid_dir),
                          split="valid", control=["logged:48"], channels=[], generative=[f"policy={tiny_sft_dir}"],
                          generative_quota=24, beam=20, budget_modes=["supplement"], device="cpu")  # fmt: skip
    channels = build_channels(args, oracle)
    arena = play_arena(args, oracle, channels)["stages"]["legacy"]["supplement"]
    # the same candidates: the arena's channel over the saved model, and the policy in memory
    items, _ = recall_all(
        {"gen_policy": channels["gen_policy"]}, {"gen_policy": 24}, funnel.batch, oracle, 64
    )
    assert all(np.array_equal(a, b) for a, b in zip(items["gen_policy"], funnel.last_items, strict=True))
    assert arena["arms"]["+gen_policy"]["added"] == "gen_policy"
    for fig, arena_fig in (("clicks", "ctr"), ("purchases", "ctcvr"), ("gmv", "gmv")):
        lift = arena["arms"]["+gen_policy"]["lifts"][arena_fig]
        assert funnel.control[fig].mean() == pytest.approx(arena["control"][arena_fig], rel=1e-12)
        assert figures[f"eg/oracle_{fig}"] == pytest.approx(lift["treatment"], rel=1e-12)
        assert figures[f"eg/oracle_{fig}_lift"] == pytest.approx(lift["lift"], rel=1e-12, abs=1e-15)
    assert set(oracle_keys()) <= set(figures)
    # the policy brings items the legacy retrieval lacks: the funnel is not the control's
    assert figures["eg/oracle_clicks"] != pytest.approx(funnel.control["clicks"].mean(), rel=1e-9)


class _RandomChannel(Channel):
    name = "random"

    def __init__(self, item_ids):
        self.item_ids = item_ids

    def recall(self, batch, quota):
        rng = np.random.default_rng(int(batch.request_ids[0]))
        return [
            rng.choice(self.item_ids, size=quota, replace=False).astype(np.int64) for _ in range(len(batch))
        ]


class _ControlEcho(Channel):
    """Brings the control's own first items again: the arm's candidates are then exactly the control's."""

    name = "echo"

    def __init__(self, funnel: OracleFunnel):
        ids = funnel.oracle.log.items["item_id"].to_numpy()
        self.items = {
            r: ids[rows] for r, rows in zip(funnel.batch.request_ids.tolist(), funnel.control_items)
        }

    def recall(self, batch, quota):
        return [self.items[r][:quota] for r in batch.request_ids.tolist()]


def test_the_oracles_best_items_lift_the_funnel_and_random_ones_do_not(oracle):
    ids = oracle.log.split("valid")["request_id"].to_numpy()[:120]
    funnel = OracleFunnel(oracle, ids, OracleEvalSettings())
    best = funnel.score(OracleChannel(oracle))
    random = funnel.score(_RandomChannel(oracle.log.items["item_id"].to_numpy()))
    # A channel adding nothing new must score exactly the control: the arm and the control are played with the
    # same candidates, ranking (noise included) and requests, and the lift is taken against that same control.
    echo = funnel.score(_ControlEcho(funnel))
    for fig in ("clicks", "purchases", "gmv"):
        assert best[f"eg/oracle_{fig}_lift"] > 0.05, best
        assert best[f"eg/oracle_{fig}_lift"] > random[f"eg/oracle_{fig}_lift"] + 0.05
        assert echo[f"eg/oracle_{fig}"] == pytest.approx(funnel.control[fig].mean(), rel=1e-12)
        assert echo[f"eg/oracle_{fig}_lift"] == pytest.approx(0.0, abs=1e-12)


def test_real_data_has_no_oracle(tiny_data_dir, sim_data_dir):
    log = SearchLog.load(tiny_data_dir)
    assert load_oracle(tiny_data_dir, log) is None  # a saved log without the simulator's stage.json
    sim = SearchLog.load(sim_data_dir)
    real = SearchLog(items=sim.items.drop(columns=[c for c in sim.items if c.startswith("gt_")]),
                     requests=sim.requests.drop(columns=[c for c in sim.requests if c.startswith("gt_")]),
                     impressions=sim.impressions)  # fmt: skip
    assert load_oracle(sim_data_dir, real) is None  # no ground-truth columns (Amazon and other real logs)
    assert isinstance(load_oracle(sim_data_dir, sim), Oracle)


def test_the_learned_reward_is_the_weighted_sum_of_the_reward_functions(tiny_log, tiny_codebook, policy):
    from reward_models import RewardContext, build_reward_funcs

    _, tokenizer, vocab = policy
    rows = _valid_rows(tiny_log, tiny_codebook, vocab, tokenizer)[:7]
    context = RewardContext(codebook=tiny_codebook, vocab=vocab, log=tiny_log)
    funcs, weights = build_reward_funcs([{"name": "sid_match", "weight": 1.0},
                                         {"name": "category_consistency", "weight": 0.5}], context)  # fmt: skip
    funcs, weights = [*funcs, _Reward(vocab)], [*weights, -0.25]
    names = [f.__name__ for f in funcs]
    view = LearnedView(rows, funcs, weights, names, vocab, tokenizer)
    valid = [tuple(map(int, s)) for s in tiny_codebook.valid_sids().tolist()]
    # per request: its logged SIDs first (sid_match > 0), then others; a request with no SID at all
    sids = [[tuple(s) for s in r["clicked_sids"][:2]] + valid[i : i + 3] for i, r in enumerate(rows)]
    sids[3] = []
    got = view.score(sids)

    # directly: every function on one completion at a time, None skipped in the weighted sum
    weighted, per_func = [], {n: [] for n in names}
    for row, row_sids in zip(rows, sids):
        columns = {k: [v] for k, v in row.items() if k != "prompt"}
        for sid in row_sids:
            ids = [vocab.encode(sid, add_eos=True)]
            values = [
                f(prompts=[row["prompt"]], completions=["x"], completion_ids=ids, **columns)[0] for f in funcs
            ]
            for n, v in zip(names, values):
                per_func[n].append(np.nan if v is None else v)
            weighted.append(sum(w * v for w, v in zip(weights, values) if v is not None))
    assert got[LEARNED_KEY] == pytest.approx(np.mean(weighted), rel=1e-12)
    for n in names:
        assert got[f"{LEARNED_KEY}/{n}"] == pytest.approx(np.nanmean(per_func[n]), rel=1e-12)
    # by hand for the plain reward: mean first code over the even requests' SIDs
    firsts = [s[0] for r, row_sids in zip(rows, sids) if r["request_id"] % 2 == 0 for s in row_sids]
    assert got[f"{LEARNED_KEY}/first_code"] == pytest.approx(np.mean(firsts))
    assert got[f"{LEARNED_KEY}/sid_match"] > 0  # the logged SIDs earn their credit


def _train(tmp_path, data_dir, sid_dir, sft_dir, **overrides):
    from trl import ModelConfig

    from eg_grpo.rl.config import EGGRPOConfig
    from eg_grpo.rl.inputs import EGGRPOScriptArguments
    from eg_grpo.rl.stage import build_trainer

    script = EGGRPOScriptArguments(data_dir=str(data_dir), max_train_rows=16, chain=False,
                                   rewards=[{"name": "sid_match", "weight": 1.0},
                                            {"name": "category_consistency", "weight": 0.5}])  # fmt: skip
    settings = dict(output_dir=str(tmp_path), sid_dir=str(sid_dir), num_generations=4, per_device_train_batch_size=8,
                    use_cpu=True, report_to="none", max_steps=2, logging_steps=1, save_strategy="no",
                    disable_tqdm=True, learning_rate=5e-3, oracle_eval_requests=40, oracle_eval_beam=4, seed=0)  # fmt: skip
    trainer = build_trainer(
        script, EGGRPOConfig(**{**settings, **overrides}), ModelConfig(model_name_or_path=str(sft_dir))
    )
    trainer.train()
    return trainer


def test_training_logs_the_oracle_curves_on_simulated_data_only(tmp_path, sim_data_dir, tiny_data_dir, tiny_sid_dir,
                                                                 tiny_sft_dir):  # fmt: skip
    trainer = _train(tmp_path / "on", sim_data_dir, tiny_sid_dir, tiny_sft_dir, oracle_eval_steps=1)
    steps = [h for h in trainer.state.log_history if "loss" in h]
    keys = [*oracle_keys(), LEARNED_KEY, f"{LEARNED_KEY}/sid_match", f"{LEARNED_KEY}/category_consistency"]
    assert [h["step"] for h in steps] == [1, 2]
    assert all(math.isfinite(h[k]) for h in steps for k in keys)
    assert "oracle_gmv_lift" in console_line(2, steps[-1]) and "learned" in console_line(2, steps[-1])
    # the last point is the trained policy's: evaluating it again gives the logged figures
    (callback,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, OracleCurves)]
    trainer.model.eval()
    again = callback.figures(trainer.model, trainer.state)
    assert {k: steps[-1][k] for k in keys} == pytest.approx({k: again[k] for k in keys}, rel=1e-6)

    # it only watches: the same run without it trains the same
    off = _train(tmp_path / "off", sim_data_dir, tiny_sid_dir, tiny_sft_dir, oracle_eval_steps=0)
    off_steps = [h for h in off.state.log_history if "loss" in h]
    assert not any(k.startswith(("eg/oracle", LEARNED_KEY)) for h in off_steps for k in h)
    for a, b in zip(steps, off_steps):
        assert (a["loss"], a["reward"]) == (b["loss"], b["reward"])

    # real data (no simulator record): the same config logs nothing and does not fail
    real = _train(tmp_path / "real", tiny_data_dir, tiny_sid_dir, tiny_sft_dir, oracle_eval_steps=1)
    assert not any(isinstance(c, OracleCurves) for c in real.callback_handler.callbacks)
    assert not any(k.startswith(("eg/oracle", LEARNED_KEY)) for h in real.state.log_history for k in h)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"oracle_eval_steps": -1}, "oracle_eval_steps=-1"), ({"oracle_eval_requests": 1}, "oracle_eval_requests=1"),
     ({"oracle_eval_beam": 0}, "oracle_eval_beam=0")],
)  # fmt: skip
def test_bad_oracle_settings_are_clear_errors(tmp_path, tiny_sid_dir, overrides, message):
    from eg_grpo.rl.config import EGGRPOConfig

    with pytest.raises(ValueError, match=message):
        EGGRPOConfig(output_dir=str(tmp_path), sid_dir=str(tiny_sid_dir), num_generations=4,
                     per_device_train_batch_size=8, use_cpu=True, report_to="none", **overrides)  # fmt: skip


def _run_dir(path, learned, gmv_lift):
    """A log history where the learned reward rises while the oracle's GMV lift falls."""
    path.mkdir()
    history = [{"step": s, "loss": 0.0, "reward": r, "eg/reward_sampled": r, "eg/learned_reward": r,
                "eg/oracle_gmv_lift": g, "eg/oracle_purchases_lift": g / 2, "eg/oracle_clicks_lift": g / 4}
               for s, (r, g) in enumerate(zip(learned, gmv_lift), start=1)]  # fmt: skip
    history.append({"step": len(learned), "train_runtime": 1.0})
    (path / "log_history.json").write_text(json.dumps(history))
    return path


def _real_run_dir(path):
    path.mkdir()
    (path / "log_history.json").write_text(json.dumps([{"step": 1, "loss": 0.0, "reward": 0.3}]))
    return path


def test_compare_and_the_report_draw_the_learned_reward_beside_the_oracle(tmp_path):
    from eg_grpo.compare import CompareArguments
    from eg_grpo.compare import run as compare
    from eg_grpo.report import reward_hacking_figure, write_report

    hacked = _run_dir(tmp_path / "hacked", [0.1, 0.3, 0.5], [0.02, -0.01, -0.05])
    honest = _run_dir(tmp_path / "honest", [0.1, 0.2, 0.25], [0.02, 0.03, 0.04])
    real = _real_run_dir(tmp_path / "amazon")
    fig = reward_hacking_figure([hacked, honest, real])
    panels = {ax.get_title(): ax for ax in fig.axes if ax.axison}
    for title, key in (("learned reward (held-out beam)", "eg/learned_reward"),
                       ("oracle GMV lift (held-out, simulated)", "eg/oracle_gmv_lift")):  # fmt: skip
        lines = {
            line.get_label(): line for line in panels[title].lines if not line.get_label().startswith("_")
        }
        assert set(lines) == {"hacked", "honest"}  # a run without the oracle curves draws no line
        for name in lines:
            logged = [
                h[key] for h in json.loads((tmp_path / name / "log_history.json").read_text()) if key in h
            ]
            assert list(lines[name].get_ydata()) == logged and list(lines[name].get_xdata()) == [1, 2, 3]
    plt.close(fig)

    table = compare(
        CompareArguments(run_dirs=[str(hacked), str(honest), str(real)], output_dir=str(tmp_path / "cmp"))
    )
    assert (tmp_path / "cmp" / "reward_hacking.png").stat().st_size > 0
    hacked_line = next(line for line in table.splitlines() if line.startswith("| hacked |") and "→" in line)
    assert "0.1000 → 0.5000" in hacked_line and "0.0200 → -0.0500" in hacked_line

    report = write_report(tmp_path, tmp_path / "no_sids", [str(hacked), str(real)], [])
    assert "![learned reward vs oracle](reward_hacking.png)" in report.read_text()
    assert (report.parent / "reward_hacking.png").stat().st_size > 0


def test_runs_without_the_oracle_curves_skip_the_panel(tmp_path):
    from eg_grpo.compare import CompareArguments
    from eg_grpo.compare import run as compare
    from eg_grpo.report import reward_hacking_figure, write_report

    real = _real_run_dir(tmp_path / "amazon")
    assert reward_hacking_figure([real]) is None
    table = compare(CompareArguments(run_dirs=[str(real)], output_dir=str(tmp_path / "cmp")))
    assert not (tmp_path / "cmp" / "reward_hacking.png").exists() and "oracle" not in table
    report = write_report(tmp_path, tmp_path / "no_sids", [str(real)], [])
    assert "oracle" not in report.read_text() and (report.parent / "training_curves.png").exists()


@pytest.mark.slow
def test_two_processes_log_the_oracle_curves_without_deadlock(
    tmp_path, sim_data_dir, tiny_sid_dir, tiny_sft_dir
):
    from test_multiprocess import launch_two

    out = tmp_path / "run"
    done = launch_two(out, sim_data_dir, tiny_sid_dir, tiny_sft_dir, "--per_device_train_batch_size", "8",
                      "--oracle_eval_steps", "2", "--oracle_eval_requests", "20", "--oracle_eval_beam", "4")  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    history = json.loads((out / "log_history.json").read_text())
    logged = [h["step"] for h in history if "eg/oracle_gmv_lift" in h and "loss" in h]
    assert logged == [2, 3]  # every 2 steps and after the last
    assert all(math.isfinite(h[LEARNED_KEY]) for h in history if LEARNED_KEY in h)


def test_the_sample_and_period_follow_the_config_not_the_training_seed(sim_data_dir, tiny_codebook, policy):
    import torch

    from eg_grpo.rl.oracle_curves import oracle_curves_callback

    _, tokenizer, vocab = policy
    log = SearchLog.load(sim_data_dir)

    def callback(**args):
        settings = {"sid_eval_steps": 3, "oracle_eval_steps": None, "sid_eval_split": "valid", "seed": 0,
                    "oracle_eval_requests": 30, "oracle_eval_beam": 4, "expert_source": ["purchased", "clicked"],
                    "beam_score": "model"}  # fmt: skip
        trainer = SimpleNamespace(args=SimpleNamespace(**{**settings, **args}), codebook=tiny_codebook,
                                  processing_class=tokenizer, reward_funcs=[], reward_weights=torch.ones(0),
                                  reward_func_names=[])  # fmt: skip
        return oracle_curves_callback(trainer, log, sim_data_dir, vocab, max_history=10, use_titles=False)

    first, other_seed = callback(), callback(seed=7)
    assert first.every == 3  # None follows sid_eval_steps
    # the valid split's oracle slice has 22 requests on the tiny data: all of them, not 30
    assert len(first.funnel.rows) == 22 and np.array_equal(first.funnel.rows, other_seed.funnel.rows)
    assert in_oracle_slice(log.requests["request_id"].to_numpy()[first.funnel.rows]).all()
    assert np.all(np.diff(first.funnel.rows) > 0)  # in time order, as the arena plays them
    assert callback(oracle_eval_steps=5).every == 5
    assert callback(oracle_eval_steps=0) is None and callback(sid_eval_steps=0) is None


def test_a_reward_that_reads_the_beam_order_is_left_out_of_the_learned_view(tiny_log, tiny_codebook, policy):
    """A held-out beam is not a rollout group: rank_aware (groups of num_generations) does not apply there."""
    from reward_models import RewardContext, build_reward_funcs

    _, tokenizer, vocab = policy
    rows = _valid_rows(tiny_log, tiny_codebook, vocab, tokenizer)[:5]
    context = RewardContext(codebook=tiny_codebook, vocab=vocab, log=tiny_log)
    funcs, weights = build_reward_funcs([{"name": "sid_match", "weight": 1.0},
                                         {"name": "rank_aware", "weight": 0.5, "group_size": 4}], context)  # fmt: skip
    view = LearnedView(rows, funcs, weights, [f.__name__ for f in funcs], vocab, tokenizer)
    valid = [tuple(map(int, s)) for s in tiny_codebook.valid_sids().tolist()]
    sids = [valid[i : i + 3] for i in range(len(rows))]  # 3 SIDs per request: not groups of 4
    got = view.score(sids)
    alone = LearnedView(rows, funcs[:1], weights[:1], [funcs[0].__name__], vocab, tokenizer).score(sids)
    assert np.isnan(got[f"{LEARNED_KEY}/rank_aware"])
    assert got[LEARNED_KEY] == pytest.approx(alone[LEARNED_KEY], rel=1e-12)


def test_the_oracle_slice_is_disjoint_from_held_out_evaluation_and_not_the_training_split(
    sim_data_dir, tiny_codebook, policy
):
    import torch

    from eg_grpo.eval.evaluator import EvalSettings, evaluate_model
    from eg_grpo.rl.oracle_curves import oracle_curves_callback

    model, tokenizer, vocab = policy
    log = SearchLog.load(sim_data_dir)
    settings = {"sid_eval_steps": 3, "oracle_eval_steps": None, "sid_eval_split": "train", "seed": 0,
                "oracle_eval_requests": 30, "oracle_eval_beam": 4, "expert_source": ["purchased", "clicked"],
                    "beam_score": "model"}  # fmt: skip
    trainer = SimpleNamespace(args=SimpleNamespace(**settings), codebook=tiny_codebook, processing_class=tokenizer,
                              reward_funcs=[], reward_weights=torch.ones(0), reward_func_names=[])  # fmt: skip
    with pytest.raises(
        ValueError, match="sid_eval_split 'train' is the training split.*sid_eval_split: valid"
    ):
        oracle_curves_callback(trainer, log, sim_data_dir, vocab, 10, False, train_split="train")
    trainer.args.sid_eval_split = "valid"
    curves = oracle_curves_callback(trainer, log, sim_data_dir, vocab, 10, False, train_split="train")
    oracle_ids = set(log.requests["request_id"].to_numpy()[curves.funnel.rows].tolist())
    # the held-out SID metrics' requests (as rl.py sets them) leave the slice out
    held_out = evaluate_model(model, tokenizer, log, tiny_codebook,
                              EvalSettings(split="valid", num_beams=4, ks=[1], beam_sizes=[4], rerun_beam_sizes=False,
                                           recall_num_items=[10], item_budgets=[], exclude_oracle_slice=True))  # fmt: skip
    ids = set(held_out["per_request"]["request_id"])
    assert ids and not ids & oracle_ids
    assert ids == set(_valid_clicked(log)[~in_oracle_slice(_valid_clicked(log))].tolist())
    # the slice is a pure function of the request id: about a tenth of the ids
    share = in_oracle_slice(np.arange(100_000)).mean()
    assert 0.09 < share < 0.11


def _valid_clicked(log):
    valid = log.split("valid")["request_id"]
    clicked = log.impressions.loc[log.impressions["clicked"].astype(bool), "request_id"]
    return valid[valid.isin(clicked)].to_numpy()


def test_the_learned_reward_counts_what_reaches_the_oracle_weighted_by_position(
    tiny_log, tiny_codebook, policy
):
    _, tokenizer, vocab = policy
    rows = _valid_rows(tiny_log, tiny_codebook, vocab, tokenizer)[:2]
    rows = [{**r, "request_id": 2 * i} for i, r in enumerate(rows)]  # even ids: _Reward applies
    view = LearnedView(rows, [_Reward(vocab)], [2.0], ["first_code"], vocab, tokenizer)
    # request 0: SID (3, ...) exposed at weight 1.0 and SID (1, ...) at 0.5; request 1: (5, ...) at 0.25
    sids = [[(3, 0, 0), (1, 0, 0)], [(5, 0, 0)]]
    got = view.score(sids, weights=[[1.0, 0.5], [0.25]])
    # first codes 3, 1, 5 weighted 1, 0.5, 0.25: (3 + 0.5 + 1.25) / 1.75; the sum is weighted by 2
    assert got[f"{LEARNED_KEY}/first_code"] == pytest.approx(4.75 / 1.75)
    assert got[LEARNED_KEY] == pytest.approx(2 * 4.75 / 1.75)
    # unweighted, as before: the plain mean
    assert view.score(sids)[f"{LEARNED_KEY}/first_code"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="2 weights for 3 SIDs"):
        view.score(sids, weights=[[1.0], [1.0]])


def test_the_curves_score_the_exposed_policy_items_sids_at_their_examination_weight(oracle, tiny_codebook):
    ids = oracle.log.split("valid")["request_id"].to_numpy()[:40]
    funnel = OracleFunnel(oracle, ids, OracleEvalSettings())
    funnel.score(OracleChannel(oracle))
    sids, weights = funnel.exposed_sids(tiny_codebook)
    shown = funnel.last_exposed
    item_ids = oracle.log.items["item_id"].to_numpy()
    assert sum(map(len, sids)) == len(shown["item"]) > 0
    for b in range(len(ids)):
        mine = shown["slot"] == b
        # only exposed items, each at P(examine) = (position + 1) ** -0.7 of the simulator
        assert len(sids[b]) == int(mine.sum()) <= funnel.n_exposed[b]
        assert [tiny_codebook.sid_of(int(i)) for i in item_ids[shown["item"][mine]]] == sids[b]
        assert all(0 < w <= 1 for w in weights[b])
