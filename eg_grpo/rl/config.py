"""`EGGRPOConfig`: TRL's `GRPOConfig` plus the expert-guidance and SID-decoding fields."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from eg_grpo.decoding.generate import check_beam_score

EXPERT_SOURCES = ("purchased", "clicked", "exposed")
EXPERT_SCHEDULES = ("always", "no_positive", "decay")
ROLLOUT_MODES = ("sample", "beam")
# The reward-aware supervised controls (eg_grpo.rl.rejection_sft): EG-GRPO's rollouts and rewards, an NLL loss.
REWARD_SFT_OBJECTIVES = ("rejection_sft", "reward_weighted_sft")
TRAINING_OBJECTIVES = ("grpo", "continued_sft", *REWARD_SFT_OBJECTIVES)
REJECTION_SELECTIONS = ("best", "above_mean")
SFT_LOG_PROBS = ("constrained", "full")
# The fields that shape each objective beyond GRPO's; the RL stage record leaves out those of other objectives,
# so adding one never changes the record (and the fingerprint) of a run that cannot read it.
OBJECTIVE_FIELDS = {
    "rejection_sft": ("rejection_selection", "sft_log_probs"),
    "reward_weighted_sft": ("reward_weight_temperature", "sft_log_probs"),
}


@dataclass
class EGGRPOConfig(GRPOConfig):
    r"""
    Configuration class for [`eg_grpo.rl.trainer.EGGRPOTrainer`].

    Only the parameters specific to expert-guided GRPO are listed here; for the rest see
    [`~trl.GRPOConfig`]. Defaults that differ from TRL's are chosen for SID generation: completions are
    `L + 1` tokens long, so `max_completion_length` defaults to 8. `beta` keeps TRL's default `0.0`; with
    `beta > 0` the KL term applies to the policy's own samples only (expert rows, which it did not sample,
    get none). Expert rows need on-policy updates (`num_iterations=1`, `steps_per_generation` dividing
    `gradient_accumulation_steps`): the PPO ratio is then exactly 1 and never clips them.

    Parameters:
        sid_dir (`str`, *optional*):
            Folder written by `recipes/build_sids.py` (holds `codebook/`). Required: the trie and the
            diagnostics are built from it.
        num_expert_samples (`int`, *optional*, defaults to `2`):
            Number `k` of the `num_generations` members of each group that are replaced by ground-truth SIDs
            from the logs. `0` is vanilla GRPO on the same code path, so the comparison is fair. Must be
            smaller than `num_generations` (a group needs at least one policy sample).
        expert_source (`list[str]`, *optional*, defaults to `["purchased", "clicked"]`):
            Which logged SIDs of a request are experts, in priority order. Any of `"purchased"`, `"clicked"`,
            `"exposed"`.
        expert_schedule (`str`, *optional*, defaults to `"always"`):
            When experts are spliced in: `"always"`; `"no_positive"`, only into groups where no policy sample
            already hits a logged SID; `"decay"`, with `k` falling linearly to 0 over `expert_decay_steps`.
        expert_decay_steps (`int`, *optional*, defaults to `100`):
            Length of the linear decay for `expert_schedule="decay"`.
        rollout_mode (`str`, *optional*, defaults to `"sample"`):
            `"sample"`: each group member is sampled independently. `"beam"`: one constrained beam search per
            group returns `num_generations` distinct SIDs (experts replace the lowest-ranked beams).
        constrained_decoding (`bool`, *optional*, defaults to `True`):
            Constrain rollouts to valid SIDs with the SID trie, and train the constrained policy: the
            log-probs of the loss, the reference KL and the importance ratio are those of the distribution
            renormalised over the trie's allowed tokens (`eg_grpo.rl.constrained`). Required for
            `rollout_mode="beam"`. With `use_vllm=True` the trie runs as a vLLM logits processor
            (`eg_grpo.rl.vllm_rollouts`), whose `processed_logprobs` are of the same constrained distribution,
            so TRL's importance-sampling correction compares like with like and may stay on. Truncated sampling
            (`top_k`, `top_p` < 1, `min_p`) is refused: the loss uses the untruncated constrained policy. With
            `cast_lm_head_to_fp32`, the constrained logits are computed from fp32 hidden states and head rows.
        sid_eval_steps (`int`, *optional*, defaults to `0`):
            Every this many steps (and after the last), log `valid/hr@K` and `valid/ndcg@K` from a
            constrained beam search over a fixed valid subsample. `0` turns it off.
        sid_eval_split (`str`, *optional*, defaults to `"valid"`):
            The split of that evaluation.
        sid_eval_examples (`int`, *optional*, defaults to `200`):
            Size of that subsample.
        sid_eval_beams (`int`, *optional*, defaults to `10`):
            Beam width of that search (the largest K logged).
        oracle_eval_steps (`int` or `None`, *optional*, defaults to `None`):
            On simulated data (the data folder's `stage.json` records the simulator), every this many steps
            (and after the last) play the policy's beam in the arena's funnel on a fixed seeded sample of the
            `sid_eval_split` requests and log the oracle's expected clicks, purchases and GMV per request
            (`eg/oracle_*`, and their lifts over the legacy retrieval alone, `eg/oracle_*_lift`) beside the
            weighted sum of the trainer's reward functions over the same SIDs (`eg/learned_reward`). `None`
            follows `sid_eval_steps`; `0` turns it off. Real data: nothing is logged. See `eg_grpo.rl.oracle_curves`.
        oracle_eval_requests (`int`, *optional*, defaults to `200`):
            Size of that sample (at least 2).
        oracle_eval_beam (`int`, *optional*, defaults to `20`):
            SIDs the policy writes per request there (the arena's `beam`; its 24 items join the legacy 48).
        beam_score (`str`, *optional*, defaults to `"model"`):
            What ranks the beams of the held-out SID metrics and the oracle curves: `"model"` (the full model's
            log-prob after the trie mask) or `"constrained"` (the trie-renormalised policy's log-prob, the policy
            RL trains); see `eg_grpo.decoding.generate_sids`. Beam rollouts (`rollout_mode="beam"`) keep their own
            ranking. It enters the run's record only when not the default.
        training_objective (`str`, *optional*, defaults to `"grpo"`):
            `"grpo"`: expert-guided GRPO (vanilla with `num_expert_samples=0`). `"continued_sft"`: the supervised
            control (`eg_grpo.rl.continued_sft`): the start model is trained by next-token loss on the same RL
            prompts with the same `num_expert_samples` expert SIDs per prompt as targets, for the same optimizer
            steps, prompts per step, learning rate, schedule, optimizer and seed; the rewards are not used.
            `"rejection_sft"` and `"reward_weighted_sft"`: the reward-aware controls (`eg_grpo.rl.rejection_sft`): the
            same rollouts as EG-GRPO (samples plus spliced experts), scored by the same reward functions and
            weights, then a negative log-likelihood loss on the rows of each group that `rejection_selection`
            keeps, or on every row weighted by `softmax(r / reward_weight_temperature)` within its group; no
            negatives, no group baseline. The KL term (`beta`) is EG-GRPO's, on the policy's own samples.
        rejection_selection (`str`, *optional*, defaults to `"best"`):
            Rows `rejection_sft` trains on: `"best"`, the highest-reward row of each group (the first one on a
            tie; none in a group whose rewards are all equal); `"above_mean"`, every row above its group's mean.
        reward_weight_temperature (`float`, *optional*, defaults to `1.0`):
            `τ` of `reward_weighted_sft`'s weights `softmax(r / τ)` within each group. Must be > 0.
        sft_log_probs (`str`, *optional*, defaults to `"constrained"`):
            Log-probs of the reward-aware controls' loss: `"constrained"`, those of the trie-constrained policy
            the rollouts are sampled from (log π_c, as EG-GRPO's loss; needs `constrained_decoding`); `"full"`,
            the full-vocabulary softmax (log π, as SFT and `continued_sft`).
        expert_advantage_weight (`float`, *optional*, defaults to `1.0`):
            Multiplies the advantage of every expert row after the group baseline is computed (the baseline
            still counts the experts' rewards), so it scales the experts' share of the policy-gradient update
            and leaves the policy's own rows as they are. `1.0` and `num_expert_samples=0` change nothing; `0`
            keeps the experts only as a shift of their group's baseline. Must be >= 0.
    """

    sid_dir: str | None = field(
        default=None,
        metadata={"help": "Folder written by recipes/build_sids.py (holds codebook/). Required."},
    )
    num_expert_samples: int = field(
        default=2,
        metadata={"help": "Group members replaced by logged ground-truth SIDs; 0 = vanilla GRPO."},
    )
    expert_source: list[str] = field(
        default_factory=lambda: ["purchased", "clicked"],
        metadata={"help": "Logged SIDs used as experts, in priority order: purchased, clicked, exposed."},
    )
    expert_schedule: str = field(
        default="always",
        metadata={"help": "always | no_positive (only groups without a hit) | decay (k falls to 0)."},
    )
    expert_decay_steps: int = field(
        default=100, metadata={"help": "Steps over which k decays to 0 when expert_schedule=decay."}
    )
    rollout_mode: str = field(
        default="sample",
        metadata={"help": "sample (independent samples) | beam (one beam search per group)."},
    )
    constrained_decoding: bool = field(
        default=True, metadata={"help": "Constrain rollouts to valid SIDs with the SID trie."}
    )
    sid_eval_steps: int = field(default=0, metadata={"help": "Log valid HR@K every N steps; 0 = off."})
    sid_eval_split: str = field(default="valid", metadata={"help": "Split of that evaluation."})
    sid_eval_examples: int = field(default=200, metadata={"help": "Valid requests in that evaluation."})
    sid_eval_beams: int = field(default=10, metadata={"help": "Beam width of that evaluation."})
    oracle_eval_steps: int | None = field(
        default=None,
        metadata={
            "help": "Log eg/oracle_* and eg/learned_reward every N steps; None = sid_eval_steps, 0 = off."
        },
    )
    oracle_eval_requests: int = field(
        default=200, metadata={"help": "Held-out requests of the oracle curves."}
    )
    oracle_eval_beam: int = field(default=20, metadata={"help": "SIDs per request of the oracle curves."})
    beam_score: str = field(
        default="model",
        metadata={"help": "Beam ranking of the held-out evaluations and oracle curves: model | constrained."},
    )
    max_completion_length: int | None = field(
        default=8, metadata={"help": "Maximum completion length; a SID needs num_levels + 1 tokens."}
    )
    training_objective: str = field(
        default="grpo",
        metadata={
            "help": "grpo | continued_sft (supervised control on the expert SIDs) | rejection_sft | "
            "reward_weighted_sft (supervised controls on EG-GRPO's rollouts, selected or weighted by reward)."
        },
    )
    rejection_selection: str = field(
        default="best", metadata={"help": "rejection_sft keeps: best (top-1 of each group) | above_mean."}
    )
    reward_weight_temperature: float = field(
        default=1.0, metadata={"help": "τ of reward_weighted_sft's weights softmax(r / τ) per group."}
    )
    sft_log_probs: str = field(
        default="constrained",
        metadata={"help": "Log-probs of the reward-aware SFT loss: constrained (log π_c) | full (log π)."},
    )
    expert_advantage_weight: float = field(
        default=1.0, metadata={"help": "Factor on the expert rows' advantages (1.0: unweighted)."}
    )

    def __post_init__(self):
        if self.bf16 is None and (self.use_cpu or not torch.cuda.is_available()):
            # TRL turns bf16 on by default; on a CPU its autocast is slow and shifts the logits that the
            # rollouts were sampled from, so the CPU default is fp32.
            self.bf16 = False
        if self.activation_checkpointing is None:
            # TRL's default sets the old name, gradient_checkpointing=True, which transformers 5.2x deprecates
            # with a FutureWarning on every config; the new name takes the same value.
            self.activation_checkpointing = self.gradient_checkpointing
        super().__post_init__()
        if self.sid_dir is None:
            raise ValueError("sid_dir is required: point it to the output folder of recipes/build_sids.py")
        if self.num_expert_samples < 0 or self.num_expert_samples >= self.num_generations:
            raise ValueError(
                f"num_expert_samples={self.num_expert_samples} must be in [0, num_generations-1] "
                f"(num_generations={self.num_generations}); a group needs at least one policy sample"
            )
        unknown = [s for s in self.expert_source if s not in EXPERT_SOURCES]
        if unknown or not self.expert_source:
            raise ValueError(
                f"expert_source {self.expert_source} must be a non-empty list of {EXPERT_SOURCES}"
            )
        if self.expert_schedule not in EXPERT_SCHEDULES:
            raise ValueError(f"expert_schedule='{self.expert_schedule}' must be one of {EXPERT_SCHEDULES}")
        if self.expert_decay_steps <= 0:
            raise ValueError("expert_decay_steps must be positive")
        if self.rollout_mode not in ROLLOUT_MODES:
            raise ValueError(f"rollout_mode='{self.rollout_mode}' must be one of {ROLLOUT_MODES}")
        if self.rollout_mode == "beam" and not self.constrained_decoding:
            raise ValueError(
                "rollout_mode='beam' needs constrained_decoding=True (beams must be distinct valid SIDs)"
            )
        if self.rollout_mode == "beam" and self.use_vllm:
            raise ValueError(
                "rollout_mode='beam' runs on the transformers path; set use_vllm=False or use sample"
            )
        self._check_unsupported_backends()
        self._check_training_objective()
        self._check_expert_rows_on_policy()
        self._check_trie_generation_settings()
        check_beam_score(self.beam_score)
        if self.sid_eval_steps < 0 or self.sid_eval_examples <= 0 or self.sid_eval_beams <= 0:
            raise ValueError("sid_eval_steps must be >= 0; sid_eval_examples and sid_eval_beams > 0")
        if (self.oracle_eval_steps or 0) < 0 or self.oracle_eval_requests < 2 or self.oracle_eval_beam < 1:
            raise ValueError(
                f"oracle_eval_steps={self.oracle_eval_steps} must be None (= sid_eval_steps) or >= 0 (0 = off), "
                f"oracle_eval_requests={self.oracle_eval_requests} >= 2 (lifts are paired over requests) and "
                f"oracle_eval_beam={self.oracle_eval_beam} >= 1"
            )
        local_rows = self.per_device_train_batch_size * self.steps_per_generation
        if local_rows % self.num_generations:
            # Per-group splicing and per-group beam search need every group whole on one process.
            raise ValueError(
                f"per_device_train_batch_size × steps_per_generation = {local_rows} must be a multiple of "
                f"num_generations = {self.num_generations}, so every rollout group sits whole on one process; "
                "raise per_device_train_batch_size or steps_per_generation, or lower num_generations"
            )
        G_eval = self.num_generations_eval or self.num_generations
        if self.eval_strategy != "no" and self.per_device_eval_batch_size % G_eval:
            # The eg/* diagnostics and the group check work on whole groups on each process.
            raise ValueError(
                f"per_device_eval_batch_size={self.per_device_eval_batch_size} must be a multiple of "
                f"num_generations_eval={G_eval} so every evaluation group sits whole on one process"
            )

    def _check_training_objective(self) -> None:
        if not self.expert_advantage_weight >= 0:  # also refuses NaN
            raise ValueError(f"expert_advantage_weight={self.expert_advantage_weight} must be >= 0")
        if self.training_objective not in TRAINING_OBJECTIVES:
            raise ValueError(
                f"training_objective='{self.training_objective}' must be one of {TRAINING_OBJECTIVES}"
            )
        if self.training_objective in REWARD_SFT_OBJECTIVES:
            self._check_reward_sft()
        if self.training_objective != "continued_sft":
            return
        if self.num_expert_samples == 0:
            raise ValueError("training_objective='continued_sft' trains on num_expert_samples expert SIDs per prompt; "
                             "num_expert_samples=0 leaves it no target. Set it to the k of the EG-GRPO run it "
                             "controls")  # fmt: skip
        if self.expert_schedule != "always":
            # `no_positive` depends on what the policy sampled and `decay` on a schedule of slots: neither has a
            # supervised counterpart that trains on the same rows.
            raise ValueError(f"training_objective='continued_sft' trains on the k experts of every prompt at every "
                             f"step; expert_schedule='{self.expert_schedule}' has no supervised counterpart. Use "
                             "expert_schedule='always'")  # fmt: skip
        if (self.per_device_train_batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise ValueError(f"training_objective='continued_sft' matches GRPO's prompts per optimizer step, "
                             f"per_device_train_batch_size × gradient_accumulation_steps / num_generations = "
                             f"{self.per_device_train_batch_size} × {self.gradient_accumulation_steps} / "
                             f"{self.num_generations}, which must be whole")  # fmt: skip

    def _check_reward_sft(self) -> None:
        objective = self.training_objective
        if self.rejection_selection not in REJECTION_SELECTIONS:
            raise ValueError(
                f"rejection_selection='{self.rejection_selection}' must be one of {REJECTION_SELECTIONS}"
            )
        if not self.reward_weight_temperature > 0:  # also refuses NaN
            raise ValueError(f"reward_weight_temperature={self.reward_weight_temperature} must be > 0")
        if self.sft_log_probs not in SFT_LOG_PROBS:
            raise ValueError(f"sft_log_probs='{self.sft_log_probs}' must be one of {SFT_LOG_PROBS}")
        if self.sft_log_probs == "constrained" and not self.constrained_decoding:
            raise ValueError(f"training_objective='{objective}' with sft_log_probs='constrained' trains log π_c of the "
                             "trie, which constrained_decoding=False does not use; set sft_log_probs: full")  # fmt: skip
        if self.expert_advantage_weight != 1.0:
            # It scales GRPO advantages, which the supervised loss never reads: refused rather than ignored.
            raise ValueError(f"expert_advantage_weight={self.expert_advantage_weight} scales GRPO's advantages, which "
                             f"training_objective='{objective}' does not use; leave it at 1.0")  # fmt: skip

    def _check_expert_rows_on_policy(self) -> None:
        # With GA % (steps_per_generation × num_iterations) == 0, TRL computes no old log-probs and the PPO
        # ratio is exactly 1, so nothing is clipped. Otherwise the old log-probs of an expert row are those of
        # a policy that never sampled it and the clip mutes exactly the rows that carry the ground truth.
        spg = self.steps_per_generation or self.gradient_accumulation_steps
        if self.num_expert_samples > 0 and self.gradient_accumulation_steps % (spg * self.num_iterations):
            raise ValueError(
                f"num_expert_samples={self.num_expert_samples} needs on-policy updates: with num_iterations="
                f"{self.num_iterations} and steps_per_generation={spg} > gradient_accumulation_steps="
                f"{self.gradient_accumulation_steps} the PPO clip would mute the expert rows, whose old log-probs "
                "come from a policy that never sampled them. Set num_iterations=1 and steps_per_generation <= "
                "gradient_accumulation_steps (a divisor of it), or num_expert_samples=0"
            )

    def _check_unsupported_backends(self) -> None:
        # The constrained log-probs read the backbone's hidden states in a forward hook and the LM head's
        # weight (gathered as TRL gathers it under ZeRO-3); under FSDP that weight is a flat shard and nothing
        # here has been checked against it, so the run is refused rather than trained on untested maths.
        fsdp = bool(self.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
        if fsdp:
            raise ValueError("FSDP is not supported by EGGRPOTrainer (the constrained head reads the LM head's "
                             "weight, which FSDP shards); use DeepSpeed ZeRO-2 or ZeRO-3 instead "
                             "(accelerate_configs/zero2.yaml, zero3.yaml)")  # fmt: skip

    def _check_trie_generation_settings(self) -> None:
        if not self.constrained_decoding:
            return
        # The loss, the KL and the importance ratio use the untruncated π_c (eg_grpo.rl.constrained): sampling from a
        # top-k/top-p/min-p truncation of it would train on log-probs of a distribution the rollouts were not
        # drawn from (off-policy without correction), on every path, vLLM included.
        truncating = {
            "top_k": self.top_k not in (None, 0, -1),
            "top_p": self.top_p is not None and self.top_p != 1.0,
            "min_p": self.min_p not in (None, 0.0),
        }
        if truncating := [name for name, is_set in truncating.items() if is_set]:
            raise ValueError(
                f"{truncating} truncate the sampling distribution, while with constrained_decoding the loss uses "
                "the untruncated trie-constrained policy (its log-probs would not be those of the sampler); unset "
                "them (top_k: 0 or null, top_p: 1.0, min_p: null) or set constrained_decoding=false"
            )
        if self.use_transformers_continuous_batching:
            raise ValueError("constrained_decoding cannot use use_transformers_continuous_batching (it takes no logits "
                             "processor, so rollouts would leave the SID trie); set it to false")  # fmt: skip
        if self.use_vllm:
            return  # vLLM honours TRL's sampling settings on top of the trie processor
        # The transformers trie path builds its own generation config: these would be silently ignored.
        ignored = {
            "generation_kwargs": self.generation_kwargs not in (None, {}),
            "repetition_penalty": self.repetition_penalty != 1.0,
            "cache_implementation": self.cache_implementation is not None,
        }
        ignored = [name for name, is_set in ignored.items() if is_set]
        if ignored:
            raise ValueError(
                f"{ignored} cannot be honoured by trie-constrained generation on the transformers path (it honours "
                "temperature); unset them, or use use_vllm=true"
            )
