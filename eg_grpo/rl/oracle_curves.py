"""Reward hacking in view: the arena's oracle figures of the policy's beam during RL, beside the learned reward.

RL optimises the learned ranking simulator (and rule rewards); on simulated data the arena's oracle knows what
users would do. Every ``oracle_eval_steps`` the policy in memory writes ``beam`` SIDs for a fixed, seeded sample
of held-out requests. The SIDs are expanded into items as the arena's generative channel does, merged beside the
legacy retrieval (the arena's ``supplement`` arm: control ``logged:48`` plus the policy's 24 items), ranked by
the simulator's legacy ranking stage and scored by the oracle (:mod:`eg_grpo.arena.funnel`):

- ``eg/oracle_clicks``, ``eg/oracle_purchases``, ``eg/oracle_gmv``: expected per request;
- ``eg/oracle_clicks_lift``, ``eg/oracle_purchases_lift``, ``eg/oracle_gmv_lift``: relative lift over the
  control-only funnel (played once, at start, on the same requests);
- ``eg/learned_reward``: the weighted sum of the trainer's own reward functions, ``eg/learned_reward/<name>``
  per function: what RL believes it is improving, scored on what reaches the oracle. Of the ``beam`` SIDs only
  the leading ones bring items within the quota, and of those items only the ranked-in ones are exposed, so
  each exposed item the policy brought counts its SID's reward, weighted by the examination probability of
  its position (the oracle's position weight); SIDs the oracle never sees do not count.

The requests are a fixed hash slice of ``sid_eval_split`` (:mod:`eg_grpo.eval.slices`), which the held-out
SID metrics leave out, so the curves never share a request with what a run is watched and tuned on; the
split may not be the training split.

A run whose learned reward rises while the oracle lifts fall is optimising the simulator's errors.
Real data (no ``gt_`` columns, no simulator record in ``stage.json``) has no oracle: nothing is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eg_grpo.arena.channels import GenerativeChannel, LoggedChannel, RequestBatch, cluster_item_scores
from eg_grpo.arena.funnel import legacy_ranking_stage, merge, play
from eg_grpo.arena.oracle import Oracle
from eg_grpo.arena.run import recall_all
from eg_grpo.arena.stats import paired_lift
from eg_grpo.data.ground_truth import has_ground_truth
from eg_grpo.data.rl_dataset import build_rl_dataset
from eg_grpo.eval.recall import RecallChannel
from eg_grpo.eval.slices import in_oracle_slice
from eg_grpo.io import STAGE_FILE
from eg_grpo.rl.callbacks import PeriodicPolicyEvaluation

logger = logging.getLogger(__name__)

CONTROL, POLICY = "logged", "gen_policy"  # the arena's names: the legacy retrieval, a generative channel
ORACLE_FIGURES = ("clicks", "purchases", "gmv")  # per-request metrics of eg_grpo.arena.funnel.play
LEARNED_KEY = "eg/learned_reward"
# EGGRPOConfig fields of the oracle curves: held-out diagnostics, not part of a run's content fingerprint
ORACLE_EVAL_FIELDS = ("oracle_eval_steps", "oracle_eval_requests", "oracle_eval_beam")


def oracle_keys() -> list[str]:
    """Every ``eg/oracle_*`` key the callback logs."""
    return [f"eg/oracle_{fig}{suffix}" for fig in ORACLE_FIGURES for suffix in ("", "_lift")]


@dataclass
class OracleEvalSettings:
    """The held-out funnel the policy's beam is played in.

    Args:
        split: the held-out requests' split (its oracle slice, :func:`eg_grpo.eval.slices.in_oracle_slice`).
        num_requests: size of the seeded sample (requests of the slice with impressions; fewer when the slice
            is smaller).
        beam: SIDs the policy writes per request (the arena's ``beam``).
        control_quota: items of the legacy retrieval (the arena's control ``logged:48``).
        generative_quota: items the policy's SIDs bring (the arena's ``generative_quota``).
        batch_size: requests per channel call, the arena's default: the legacy retrieval seeds its draws per
            call, so the same batching gives the arena's control candidates.
        max_history, use_titles: prompt settings, as in training.
        seed: the sample's seed, the ranking noise's and the legacy retrieval's (the arena's ``seed``). Not
            the training seed: runs of several seeds are scored on the same requests, in the arena's funnel.
        beam_score: what ranks the policy's beams, ``"model"`` or ``"constrained"`` (the arena's ``beam_score``).
    """

    split: str = "valid"
    num_requests: int = 200
    beam: int = 20
    control_quota: int = 48
    generative_quota: int = 24
    batch_size: int = 64
    max_history: int = 10
    use_titles: bool = False
    seed: int = 0
    beam_score: str = "model"


def load_oracle(data_dir: str | Path, log) -> Oracle | None:
    """The oracle of a simulated data folder, or None for real data (no ground-truth columns, or no
    ``stage.json`` to rebuild the simulator's users from).

    Raises:
        ValueError: the folder is simulated but inconsistent (see :class:`~eg_grpo.arena.oracle.Oracle`).
    """
    if not has_ground_truth(log) or not (Path(data_dir) / STAGE_FILE).is_file():
        return None
    return Oracle.from_data_dir(data_dir, log)


class OracleFunnel:
    """The arena's ``supplement`` arm with the legacy ranking stage, on a fixed sample of requests.

    Args:
        oracle: the data's :class:`~eg_grpo.arena.oracle.Oracle`.
        request_ids: ``(B,)`` the sampled requests, in the order they are played.
        settings: quotas, batching and seed.
    """

    def __init__(self, oracle: Oracle, request_ids: np.ndarray, settings: OracleEvalSettings):
        self.oracle, self.settings = oracle, settings
        self.rows = oracle.request_rows(request_ids)  # (B,)
        self.batch = RequestBatch.from_log(oracle.log, self.rows)
        shown = oracle.log.impressions.groupby("request_id").size()
        self.n_exposed = shown.reindex(self.batch.request_ids, fill_value=0).to_numpy()  # (B,)
        self.quotas = {CONTROL: settings.control_quota, POLICY: settings.generative_quota}
        self.bits = {name: i for i, name in enumerate(self.quotas)}
        self.ranking = legacy_ranking_stage(oracle, settings.seed)
        logged = LoggedChannel(oracle, seed=settings.seed)
        recalled, _ = recall_all({CONTROL: logged}, self.quotas, self.batch, oracle, settings.batch_size)
        self.control_items = recalled[CONTROL]  # the control's candidates never change: recalled once
        self.control = self._play({CONTROL: self.control_items}, {CONTROL: settings.control_quota})
        self.item_scores = cluster_item_scores(oracle.log)  # the order inside a cluster, as in the arena
        items = oracle.log.items
        self.item_titles = (
            dict(zip(items["item_id"].tolist(), items["title"].tolist())) if settings.use_titles else None
        )

    def _play(self, recalled, quotas) -> dict[str, np.ndarray]:
        return play(merge(recalled, quotas, self.bits), self.rows, self.n_exposed, self.oracle, self.ranking,
                    self.bits).per_request  # fmt: skip

    def score(self, channel) -> dict[str, float]:
        """``eg/oracle_<fig>`` (mean per request) and ``eg/oracle_<fig>_lift`` of the arm that adds ``channel``."""
        recalled, _ = recall_all(
            {POLICY: channel}, self.quotas, self.batch, self.oracle, self.settings.batch_size
        )
        self.last_items = recalled[POLICY]  # (B,) item rows per request, as the arena's channel brought them
        outcome = play(merge({CONTROL: self.control_items, **recalled}, self.quotas, self.bits), self.rows,
                       self.n_exposed, self.oracle, self.ranking, self.bits)  # fmt: skip
        arm, shown = outcome.per_request, outcome.exposed
        mine = (shown["sources"] & (np.uint64(1) << np.uint64(self.bits[POLICY]))) != 0
        # (slot, item row, P(examine)) of every exposed item the policy brought: what the oracle saw of it
        self.last_exposed = {k: shown[k][mine] for k in ("slot", "item", "examine")}
        out = {}
        for fig in ORACLE_FIGURES:
            lift = paired_lift(arm[fig], self.control[fig])
            out[f"eg/oracle_{fig}"], out[f"eg/oracle_{fig}_lift"] = lift["treatment"], lift["lift"]
        return out

    def exposed_sids(self, codebook) -> tuple[list[list[tuple]], list[list[float]]]:
        """Per request of the last :meth:`score`, the SID of every exposed item the policy brought and its
        position weight (P(examine) at its position), in exposure order."""
        sids, weights = [[] for _ in self.rows], [[] for _ in self.rows]
        shown = self.last_exposed
        item_ids = self.oracle.log.items["item_id"].to_numpy()[shown["item"]]
        codes = codebook.sids_of(item_ids).tolist() if len(item_ids) else []
        for slot, sid, w in zip(shown["slot"].tolist(), codes, shown["examine"].tolist()):
            sids[slot].append(tuple(map(int, sid)))
            weights[slot].append(float(w))
        return sids, weights


class LearnedView:
    """The trainer's reward functions (with their weights) over SIDs written for the sampled requests.

    Args:
        rows: per request, its RL row (:func:`eg_grpo.data.rl_dataset.build_rl_dataset`), the columns
            TRL hands the reward functions.
        reward_funcs: the trainer's reward callables (``trainer.reward_funcs``).
        weights: ``(F,)`` their weights (``trainer.reward_weights``).
        names: their logged names (``trainer.reward_func_names``).
        vocab: the policy's :class:`~eg_grpo.sid.tokens.SIDVocab` (SID -> completion token ids).
        tokenizer: the policy's tokenizer (the completions' text).
    """

    def __init__(self, rows: list[dict], reward_funcs, weights, names, vocab, tokenizer):
        if any(isinstance(f, torch.nn.Module) or not callable(f) for f in reward_funcs):
            raise ValueError(
                "the learned view calls reward functions; a reward model (nn.Module) is not supported"
            )
        self.rows, self.reward_funcs, self.names = rows, list(reward_funcs), list(names)
        self.weights = np.asarray([float(w) for w in weights], dtype=float)  # (F,)
        self.vocab, self.tokenizer = vocab, tokenizer

    def per_completion(self, sids_per_request: list[list[tuple]], trainer_state=None) -> np.ndarray:
        """``(C, F)`` rewards (NaN = "does not apply") of every (request, SID) pair, requests in order."""
        if len(sids_per_request) != len(self.rows):
            raise ValueError(f"{len(sids_per_request)} SID lists for {len(self.rows)} requests")
        rows = [row for row, sids in zip(self.rows, sids_per_request) for _ in sids]
        ids = [self.vocab.encode(sid, add_eos=True) for sids in sids_per_request for sid in sids]
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        prompts = [row["prompt"] for row in rows]
        # TRL's contract: conversational prompts get [{"role": "assistant", ...}] completions
        completions = [[{"role": "assistant", "content": t}] if isinstance(p, list) else t
                       for p, t in zip(prompts, texts)]  # fmt: skip
        columns = {k: [row[k] for row in rows] for k in (rows[0] if rows else {}) if k != "prompt"}
        # Held-out scoring must not write into the trainer's completion tables or metrics.
        columns |= {"trainer_state": trainer_state, "log_extra": _ignore, "log_metric": _ignore}
        out = np.full((len(ids), len(self.reward_funcs)), np.nan)
        for j, func in enumerate(self.reward_funcs):
            # A held-out beam is not a rollout group: a reward that reads a group's beam order does not apply.
            if ids and not getattr(getattr(func, "reward_fn", func), "needs_beam_order", False):
                values = func(prompts=prompts, completions=completions, completion_ids=ids, **columns)
                out[:, j] = [np.nan if v is None else float(v) for v in values]
        return out

    def score(
        self,
        sids_per_request: list[list[tuple]],
        trainer_state=None,
        weights: list[list[float]] | None = None,
    ) -> dict[str, float]:
        """``eg/learned_reward``: the mean over completions of TRL's weighted sum (NaN-skipping, NaN when no
        function applies), and ``eg/learned_reward/<name>`` per function.

        Args:
            sids_per_request: per request, the SIDs to score (a SID may repeat: one entry per exposed item).
            trainer_state: handed to the reward functions.
            weights: per request, one weight per SID (the position weights of the exposed items); None: 1.
        """
        per_func = self.per_completion(sids_per_request, trainer_state)  # (C, F)
        w = (
            np.ones(len(per_func))
            if weights is None
            else np.asarray([x for ws in weights for x in ws], float)
        )
        if len(w) != len(per_func):
            raise ValueError(f"{len(w)} weights for {len(per_func)} SIDs")
        weighted = np.where(np.isnan(per_func).all(1), np.nan, np.nansum(per_func * self.weights, axis=1))
        out = {LEARNED_KEY: _weighted_nanmean(weighted, w)}
        out |= {
            f"{LEARNED_KEY}/{name}": _weighted_nanmean(per_func[:, j], w) for j, name in enumerate(self.names)
        }
        return out


def _ignore(*args, **kwargs) -> None:
    return None


def _weighted_nanmean(x: np.ndarray, w: np.ndarray) -> float:
    """``sum(w x) / sum(w)`` over the finite ``x``; NaN when none is."""
    ok = np.isfinite(x) & (w > 0)
    return float(np.sum(w[ok] * x[ok]) / np.sum(w[ok])) if ok.any() else float("nan")


class PolicyRecall(RecallChannel):
    """:class:`~eg_grpo.eval.recall.RecallChannel` that keeps the SIDs it wrote (in request order), so the
    learned view scores the very beams the oracle played."""

    recorded: list[list[tuple]]

    def _scored_sids(self, queries, histories, beam, profiles=None, catalogue=None):
        # The one path every recall takes (recall_sids, recall_batch, recall_scored_batch), so each beam
        # is recorded once; ``catalogue`` (the snapshot the caller read) is passed on unchanged.
        found = super()._scored_sids(queries, histories, beam, profiles, catalogue)
        sids = [[sid for sid, _ in pairs] for pairs in found]
        self.recorded = getattr(self, "recorded", []) + sids  # from_model skips __init__: set on first use
        return found


class OracleCurves(PeriodicPolicyEvaluation):
    """Plays the policy's beam in the oracle funnel: ``eg/oracle_*`` and ``eg/learned_reward*``.

    Args:
        trainer: the `EGGRPOTrainer` (its model, tokenizer, codebook and metric buffer).
        funnel: the :class:`OracleFunnel` of the sampled requests.
        learned: the :class:`LearnedView` of the same requests, in the same order (None: a trainer without
            reward functions, the supervised control, logs the oracle figures only).
        every: period in optimizer steps (> 0).
    """

    def __init__(self, trainer, funnel: OracleFunnel, learned: LearnedView | None, every: int):
        super().__init__(trainer, every)
        self.funnel, self.learned = funnel, learned

    def figures(self, model, state=None) -> dict[str, float]:
        s, trainer = self.funnel.settings, self.trainer
        recall = PolicyRecall.from_model(model, trainer.processing_class, trainer.codebook,
                                         item_scores=self.funnel.item_scores, max_history=s.max_history,
                                         item_titles=self.funnel.item_titles, use_titles=s.use_titles,
                                         batch_size=16, beam_score=s.beam_score)  # fmt: skip
        figures = self.funnel.score(GenerativeChannel.from_recall_channel(POLICY, recall, beam=s.beam))
        if not self.learned:
            return figures
        sids, weights = self.funnel.exposed_sids(trainer.codebook)
        return figures | self.learned.score(sids, state, weights)


def oracle_curves_callback(
    trainer,
    log,
    data_dir,
    vocab,
    max_history: int,
    use_titles: bool,
    args=None,
    train_split: str | None = None,
) -> OracleCurves | None:
    """The callback for ``trainer`` as its config asks (``oracle_eval_*``), or None when it is off or the data
    has no oracle (real data: nothing is logged).

    Args:
        train_split: the split the run trains on; the curves' split must be another.

    Raises:
        ValueError: ``sid_eval_split`` is the training split, or its oracle slice has fewer than 2 requests with
            impressions.
    """
    args = args or trainer.args  # the RL config (the supervised control's trainer holds an SFTConfig)
    every = args.sid_eval_steps if args.oracle_eval_steps is None else args.oracle_eval_steps
    if not every:
        return None
    if train_split is not None and args.sid_eval_split == train_split:
        raise ValueError(
            f"sid_eval_split {args.sid_eval_split!r} is the training split: the oracle curves (and the held-out SID "
            "metrics) would score requests the policy trains on; set sid_eval_split: valid (or another split than "
            "train_split), or oracle_eval_steps: 0"
        )
    oracle = load_oracle(data_dir, log)
    if oracle is None:
        logger.info("oracle curves off: %s holds real data (no simulator ground truth)", data_dir)
        return None
    settings = OracleEvalSettings(split=args.sid_eval_split, num_requests=args.oracle_eval_requests,
                                  beam=args.oracle_eval_beam, max_history=max_history,
                                  use_titles=use_titles, beam_score=args.beam_score)  # fmt: skip
    rows = build_rl_dataset(log, trainer.codebook, vocab, trainer.processing_class, split=settings.split,
                            expert_source=args.expert_source, require_expert=False, max_history=max_history,
                            use_titles=use_titles).to_list()  # fmt: skip
    # only the split's oracle slice: the held-out SID metrics leave it out (EvalSettings.exclude_oracle_slice)
    rows = [row for row, mine in zip(rows, in_oracle_slice([r["request_id"] for r in rows])) if mine]
    if len(rows) < 2:
        raise ValueError(f"oracle curves need >= 2 {settings.split!r} requests with impressions in the split's "
                         f"oracle slice (eg_grpo.eval.slices), found {len(rows)}; set sid_eval_split to a larger "
                         "split or oracle_eval_steps: 0")  # fmt: skip
    rng = np.random.default_rng(settings.seed)
    keep = np.sort(rng.choice(len(rows), size=min(settings.num_requests, len(rows)), replace=False))
    rows = [rows[i] for i in keep]
    funnel = OracleFunnel(oracle, np.array([r["request_id"] for r in rows]), settings)
    learned = None  # the supervised control has no reward functions: oracle curves only
    if getattr(trainer, "reward_funcs", None):
        learned = LearnedView(rows, trainer.reward_funcs, trainer.reward_weights.tolist(),
                              trainer.reward_func_names, vocab, trainer.processing_class)  # fmt: skip
    return OracleCurves(trainer, funnel, learned, every)
