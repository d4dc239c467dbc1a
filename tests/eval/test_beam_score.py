"""``beam_score``: one beam-ranking setting (``model`` | ``constrained``) through the evaluator, the recall
channel, the service, the arena and the RL run's held-out evaluations, and what each records."""

import json
from dataclasses import asdict, replace

import pytest

import eg_grpo.eval.evaluator as evaluator_module
from eg_grpo.arena.config import ArenaArguments
from eg_grpo.data.sft_dataset import check_tokenizer_has_sids
from eg_grpo.decoding import SIDTrie, generate_sids, logits_width
from eg_grpo.eval.evaluator import EvalSettings, evaluate_model
from eg_grpo.eval.recall import RecallChannel
from eg_grpo.io import content_config, read_stage, stage_record
from eg_grpo.modeling import load_model_and_tokenizer
from eg_grpo.serve.config import ServeConfig

SMALL = dict(split="valid", num_beams=10, ks=[1, 5, 10], beam_sizes=[10], recall_num_items=[10], item_budgets=[],
             max_examples=24, batch_size=1)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model(tiny_sft_dir):
    model, tok = load_model_and_tokenizer(str(tiny_sft_dir))
    return model.eval(), tok


def _ranked(model, tok, codebook, prompts, score):
    """Per prompt, the SIDs ``generate_sids`` returns at width 10 under ``score``, one prompt per call."""
    vocab = check_tokenizer_has_sids(tok, codebook)
    trie = SIDTrie.from_sid_token_ids(codebook.sid_token_ids(vocab), vocab_size=logits_width(model))
    found = generate_sids(model, tok, prompts, trie, mode="beam", num=10, batch_size=1, score=score)
    return [[vocab.decode(c.token_ids) for c in cands] for cands in found]


def test_the_evaluator_ranks_as_generate_sids_constrained_does(
    tiny_log, tiny_codebook, tiny_model, monkeypatch
):
    model, tok = tiny_model
    seen = {}  # prompt -> the SIDs the evaluator's beam search returned for it

    def spy(model, tokenizer, prompts, trie, **kwargs):
        found = generate_sids(model, tokenizer, prompts, trie, **kwargs)
        vocab = check_tokenizer_has_sids(tokenizer, tiny_codebook)
        seen.update({p: [vocab.decode(c.token_ids) for c in cands] for p, cands in zip(prompts, found)})
        seen["score"] = kwargs.get("score", "model")
        return found

    monkeypatch.setattr(evaluator_module, "generate_sids", spy)
    results = evaluate_model(
        model, tok, tiny_log, tiny_codebook, EvalSettings(**SMALL, beam_score="constrained")
    )
    assert results["beam_score"] == "constrained" and results["settings"]["beam_score"] == "constrained"
    assert seen.pop("score") == "constrained"

    prompts = list(seen)
    constrained = _ranked(model, tok, tiny_codebook, prompts, "constrained")
    assert [seen[p] for p in prompts] == constrained  # same SIDs, same order, every request
    # The two scores rank differently on this model, so the equality above tells them apart.
    assert _ranked(model, tok, tiny_codebook, prompts, "model") != constrained

    # the per-request target ranks are those of the constrained lists
    requests = (
        tiny_log.requests.set_index("request_id").loc[results["per_request"]["request_id"]].reset_index()
    )
    by_request = evaluator_module.request_prompts(tiny_log, requests, tiny_codebook, tok, 10, False)
    targets = evaluator_module.target_items(tiny_log, requests["request_id"])
    target_sids = [
        tuple(map(int, s)) for s in tiny_codebook.sids_of(targets.loc[requests["request_id"]]).tolist()
    ]
    expected = [-1 if (r := evaluator_module.M.first_hit_rank(seen[p], t)) is None else r
                for p, t in zip(by_request, target_sids)]  # fmt: skip
    assert results["per_request"]["target_rank"] == expected


def test_the_evaluation_stage_records_the_score_and_keeps_old_folders_current(
    tiny_data_dir, tiny_sid_dir, tiny_sft_dir, tmp_path
):
    from eg_grpo.stages.evaluate import EvaluateArguments, evaluate_stage_record
    from eg_grpo.stages.evaluate import run as run_evaluate

    args = EvaluateArguments(data_dir=str(tiny_data_dir), sid_dir=str(tiny_sid_dir), model_dir=str(tiny_sft_dir),
                             output_dir=str(tmp_path / "eval"), device="cpu")  # fmt: skip
    default = EvalSettings(**SMALL)
    # the record an evaluation written before the setting existed holds: the same fingerprint at the default
    before = {k: v for k, v in asdict(default).items() if k != "beam_score"}
    old = stage_record("evaluate", {"settings": content_config(before)},
                       {"data": tiny_data_dir, "sids": tiny_sid_dir, "model": tiny_sft_dir})  # fmt: skip
    record = evaluate_stage_record(args, default)
    assert record["fingerprint"] == old["fingerprint"] and "beam_score" not in record["config"]["settings"]
    constrained = replace(default, beam_score="constrained")
    assert evaluate_stage_record(args, constrained)["fingerprint"] != old["fingerprint"]

    run_evaluate(args, constrained)
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    stage = read_stage(tmp_path / "eval")
    assert results["beam_score"] == "constrained" and results["settings"]["beam_score"] == "constrained"
    assert stage["config"]["settings"]["beam_score"] == "constrained" and stage["beam_score"] == "constrained"
    # the default, in a folder of its own: named in stage.json, outside the fingerprinted config
    run_evaluate(replace(args, output_dir=str(tmp_path / "eval_model")), default)
    stage = read_stage(tmp_path / "eval_model")
    assert stage["beam_score"] == "model" and stage["fingerprint"] == old["fingerprint"]
    assert json.loads((tmp_path / "eval_model" / "eval_results.json").read_text())["beam_score"] == "model"


def test_the_recall_channel_ranks_with_its_beam_score(tiny_sft_dir, tiny_sid_dir, tiny_codebook, tiny_log,
                                                      tiny_model):  # fmt: skip
    model, tok = tiny_model
    requests = tiny_log.split("valid").iloc[:6]
    queries, histories = requests["query"].tolist(), requests["history"].tolist()
    channel = RecallChannel(tiny_sft_dir, tiny_sid_dir, device="cpu", beam_score="constrained")
    assert channel.beam_score == "constrained"
    prompts = [channel._prompt(q, h) for q, h in zip(queries, histories)]
    vocab = check_tokenizer_has_sids(tok, tiny_codebook)
    trie = SIDTrie.from_sid_token_ids(tiny_codebook.sid_token_ids(vocab), vocab_size=logits_width(model))
    for score, recaller in (("constrained", channel),
                            ("model", RecallChannel.from_model(model, tok, tiny_codebook))):  # fmt: skip
        found = recaller.recall_scored_batch(queries, histories, beam=8, max_items=10_000)
        expected = generate_sids(model, tok, prompts, trie, mode="beam", num=8, score=score)
        for got, cands in zip(found, expected):
            clusters = list(dict.fromkeys((sid, s) for _, sid, s in got))
            want = [(vocab.decode(c.token_ids), c.score) for c in cands]
            assert [sid for sid, _ in clusters] == [sid for sid, _ in want]
            assert [s for _, s in clusters] == pytest.approx([s for _, s in want], abs=1e-4)
    # from_model takes it as well (the oracle curves' policy channel)
    assert (
        RecallChannel.from_model(model, tok, tiny_codebook, beam_score="constrained").beam_score
        == "constrained"
    )


def test_the_service_takes_it_from_its_command_line():
    config = ServeConfig.from_args(["--model_dir", "m", "--sid_dir", "s", "--beam_score", "constrained"])
    assert config.beam_score == "constrained"
    assert ServeConfig.from_args(["--model_dir", "m", "--sid_dir", "s"]).beam_score == "model"


def test_bad_values_are_refused(tiny_sft_dir, tiny_sid_dir, tiny_data_dir, tmp_path):
    from eg_grpo.rl.config import EGGRPOConfig

    with pytest.raises(ValueError, match="beam score 'logp' is unknown"):
        EvalSettings(beam_score="logp")
    with pytest.raises(ValueError, match="beam score"):
        RecallChannel(tiny_sft_dir, tiny_sid_dir, device="cpu", beam_score="full")
    with pytest.raises(ValueError, match="beam score"):
        ServeConfig(model_dir="m", sid_dir="s", beam_score="Constrained")
    with pytest.raises(ValueError, match="beam score"):
        ArenaArguments(data_dir=str(tiny_data_dir), channels=["oracle:24"], beam_score="policy").validate()
    with pytest.raises(ValueError, match="beam score"):
        EGGRPOConfig(output_dir=str(tmp_path), sid_dir=str(tiny_sid_dir), num_generations=4,
                     per_device_train_batch_size=8, use_cpu=True, report_to="none", beam_score="pi_c")  # fmt: skip
    with pytest.raises(ValueError, match="beam score"):
        generate_sids(None, None, [], None, score="both")


def test_the_arena_records_it_only_when_not_the_default(tiny_data_dir, tiny_sft_dir, tiny_sid_dir, tiny_log):
    from eg_grpo.arena.channels import GenerativeChannel
    from eg_grpo.arena.run import arena_stage_record

    base = ArenaArguments(data_dir=str(tiny_data_dir), channels=["oracle:24"])
    record = arena_stage_record(base)
    assert "beam_score" not in record["config"]
    changed = arena_stage_record(replace(base, beam_score="constrained"))
    assert changed["config"]["beam_score"] == "constrained"
    assert changed["fingerprint"] != record["fingerprint"]
    # the generative channel ranks with it
    channel = GenerativeChannel(
        "gen_sft", tiny_sft_dir, tiny_sid_dir, tiny_log, device="cpu", beam_score="constrained"
    )
    assert channel.inner.beam_score == "constrained"


def test_the_rl_run_records_it_and_its_evaluations_use_it(tiny_sft_dir, tiny_sid_dir, sim_data_dir, tmp_path,
                                                          monkeypatch):  # fmt: skip
    from trl import ModelConfig

    from eg_grpo.rl.callbacks import HeldOutSIDMetrics
    from eg_grpo.rl.config import EGGRPOConfig
    from eg_grpo.rl.inputs import EGGRPOScriptArguments, rl_stage_record
    from eg_grpo.rl.oracle_curves import OracleCurves, PolicyRecall
    from eg_grpo.rl.stage import build_trainer

    script = EGGRPOScriptArguments(data_dir=str(sim_data_dir), max_train_rows=16, chain=False,
                                   rewards=[{"name": "sid_match", "weight": 1.0}])  # fmt: skip
    settings = dict(output_dir=str(tmp_path), sid_dir=str(tiny_sid_dir), num_generations=4, per_device_train_batch_size=8,
                    use_cpu=True, report_to="none", max_steps=1, save_strategy="no", disable_tqdm=True,
                    sid_eval_steps=1, sid_eval_examples=8, oracle_eval_requests=8, oracle_eval_beam=4)  # fmt: skip
    model_args = ModelConfig(model_name_or_path=str(tiny_sft_dir))
    default = rl_stage_record(script, EGGRPOConfig(**settings), model_args)
    assert "beam_score" not in default["config"]["training"]  # runs recorded before it stay current
    args = EGGRPOConfig(**settings, beam_score="constrained")
    assert rl_stage_record(script, args, model_args)["config"]["training"]["beam_score"] == "constrained"

    trainer = build_trainer(script, args, model_args)
    callbacks = trainer.callback_handler.callbacks
    (held_out,) = [c for c in callbacks if isinstance(c, HeldOutSIDMetrics)]
    (curves,) = [c for c in callbacks if isinstance(c, OracleCurves)]
    assert (
        held_out.settings.beam_score == "constrained" and curves.funnel.settings.beam_score == "constrained"
    )
    built = {}
    original = PolicyRecall.from_model.__func__

    def from_model(cls, *args, **kwargs):
        built["channel"] = original(cls, *args, **kwargs)
        return built["channel"]

    monkeypatch.setattr(PolicyRecall, "from_model", classmethod(from_model))
    curves.figures(trainer.model.eval())
    assert built["channel"].beam_score == "constrained"  # the policy's beams in the funnel are ranked by it
