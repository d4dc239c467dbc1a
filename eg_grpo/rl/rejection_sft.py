"""The reward-aware supervised controls of EG-GRPO: SFT on the best of EG-GRPO's own rollout groups.

With ``training_objective: rejection_sft`` (or ``reward_weighted_sft``) the RL stage trains
:class:`RejectionSFTTrainer`, an :class:`~eg_grpo.rl.trainer.EGGRPOTrainer` whose loss alone is replaced:

* the rollouts are EG-GRPO's: ``num_generations`` trie-constrained samples per prompt with the experts
  spliced in, with the same generation settings, on the same rows, steps, prompts per step, learning
  rate, schedule, optimizer and seed (nothing of the parent's generation path is touched);
* the rewards are EG-GRPO's: the same reward functions and weights, aggregated per row as TRL does
  (``multi_objective_aggregation``), so every ``rewards/*``, ``eg/reward_sampled`` and held-out metric
  is logged as for EG-GRPO;
* the loss is a negative log-likelihood on the rows :func:`selection_weights` keeps in each group (or
  weighs by ``softmax(r / τ)``): ``Σ_i w_i Σ_t -log π_c(y_it) / Σ_i w_i n_i`` over the optimizer step's
  tokens, with ``π_c`` the trie-constrained policy the rollouts come from (``sft_log_probs: full``:
  the plain softmax). No negatives, no group baseline: a comparison with EG-GRPO says what GRPO's
  advantages add over learning from the group's best.

The KL term (``beta``) is kept as EG-GRPO applies it (k3 on the policy's own samples, averaged over the
step's completion tokens), so that ``beta`` is not one more difference between the two arms.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer

from eg_grpo.rl.config import REWARD_SFT_OBJECTIVES
from eg_grpo.rl.group_stats import group_rewards
from eg_grpo.rl.trainer import EGGRPOTrainer


def selection_weights(
    rewards: torch.Tensor, G: int, objective: str, selection: str = "best", temperature: float = 1.0
) -> torch.Tensor:
    """Per-row weights of the supervised loss, ``(rows,)``, from the rows' scalar rewards.

    Args:
        rewards: ``(rows,)`` one reward per row, in groups of ``G`` consecutive rows; NaN for a row that
            no reward function scored (it is never kept and never weighed).
        G: the group size.
        objective: ``rejection_sft`` or ``reward_weighted_sft``.
        selection: for ``rejection_sft``: ``best`` keeps the highest-reward row of each group (the first
            one on a tie, as `argmax`) and ``above_mean`` every row strictly above its group's mean; a group
            whose scored rewards are all equal has no best and keeps nothing (its rows tell nothing apart).
        temperature: for ``reward_weighted_sft``: the weights are ``softmax(r / temperature)`` within each
            group (they sum to 1 per group with a scored row).

    Returns:
        ``(rows,)`` float weights: 0 or 1 for ``rejection_sft``, in ``[0, 1]`` for ``reward_weighted_sft``.
    """
    grouped = rewards.view(-1, G)  # (groups, G)
    scored = ~torch.isnan(grouped)
    if objective == "reward_weighted_sft":
        logits = (grouped / temperature).masked_fill(~scored, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        return torch.nan_to_num(weights, nan=0.0).flatten()  # a group with no scored row: NaN -> 0
    if objective != "rejection_sft":
        raise ValueError(f"objective '{objective}' must be one of {REWARD_SFT_OBJECTIVES}")
    high = grouped.masked_fill(~scored, float("-inf")).amax(dim=1)  # (groups,)
    low = grouped.masked_fill(~scored, float("inf")).amin(dim=1)
    spread = (high > low)[:, None]  # exact: equal rewards are equal floats; fewer than 2 scored rows -> False
    if selection == "best":
        best = grouped.masked_fill(~scored, float("-inf")).argmax(dim=1)  # first of the highest
        keep = torch.nn.functional.one_hot(best, G).bool()
    elif selection == "above_mean":
        # strictly above the nan-mean; the spread gate keeps float noise of a flat group's mean from selecting
        keep = grouped > torch.nanmean(grouped, dim=1, keepdim=True)  # NaN compares False
    else:
        raise ValueError(f"selection '{selection}' must be best or above_mean")
    return (keep & spread & scored).float().flatten()


class RejectionSFTTrainer(EGGRPOTrainer):
    """EG-GRPO's rollouts and rewards with a supervised loss on the reward-selected rows of each group.

    Args:
        As [`~eg_grpo.rl.trainer.EGGRPOTrainer`]; `args.training_objective` must be `"rejection_sft"` or
        `"reward_weighted_sft"` (with `rejection_selection`, `reward_weight_temperature`, `sft_log_probs`).

    The generation batch gains ``sft_weights`` ``(B,)`` (the rows' loss weights) and ``sft_tokens`` (a
    scalar: ``Σ w_i n_i`` over the whole generation batch, all processes), and the logs gain ``rsft/*``:
    the share of rows kept (``selected_frac``, weight > 0), the share of the loss weight on expert rows
    (``selected_expert_frac``), the weighted reward of the kept rows (``selected_reward``) and their
    weighted NLL per token (``nll``).
    """

    _tag_names = ["trl", "eg-grpo", "rejection-sft"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.training_objective not in REWARD_SFT_OBJECTIVES:
            raise ValueError(f"RejectionSFTTrainer trains {REWARD_SFT_OBJECTIVES}, not training_objective="
                             f"'{self.args.training_objective}'")  # fmt: skip
        self._selection_rewards: torch.Tensor | None = None  # (global rows, functions) of the last scoring

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list, *args, **kwargs):
        # The parent's diagnostics consume their copy of the matrix; the selection needs its own.
        rewards = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list, *args, **kwargs
        )
        self._selection_rewards = rewards
        return rewards

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        per_func, self._selection_rewards = self._selection_rewards, None
        G = self.num_generations if self.model.training else self.num_generations_eval
        args, device = self.args, self.accelerator.device
        # (global rows,): the per-row reward TRL's advantages are centred on, under the same aggregation
        rewards = group_rewards(per_func, self.reward_weights, G, self.multi_objective_aggregation)
        weights = selection_weights(rewards, G, args.training_objective, args.rejection_selection,
                                    args.reward_weight_temperature).to(device)  # fmt: skip
        B = out["completion_ids"].shape[0]  # local rows; whole groups on each process (config check)
        start = self.accelerator.process_index * B
        local = weights[start : start + B]  # (B,)
        lengths = self._loss_mask(out).sum(1).float()  # (B,)
        out["sft_weights"] = local
        out["sft_tokens"] = self.accelerator.reduce((local * lengths).sum(), reduction="sum")
        self._log_selection(weights, per_func, out["expert_mask"], "train" if self.model.training else "eval")
        return out

    def _log_selection(self, weights: torch.Tensor, per_func: torch.Tensor, expert_mask: torch.Tensor,
                       mode: str) -> None:  # fmt: skip
        experts = self.accelerator.gather(expert_mask).float().to(weights.device)  # (global rows,)
        # the weighted sum of the reward functions (TRL's logged `reward`), unscored rows 0
        raw = (per_func * self.reward_weights.to(per_func)).nansum(dim=1).to(weights.device)  # (global rows,)
        total = weights.sum()
        metrics = self._metrics[mode]
        metrics["rsft/selected_frac"].append((weights > 0).float().mean().item())
        nan = float("nan")
        metrics["rsft/selected_expert_frac"].append(
            (weights * experts).sum().item() / total.item() if total else nan
        )
        picked = raw * weights
        metrics["rsft/selected_reward"].append(picked.sum().item() / total.item() if total else nan)

    @staticmethod
    def _loss_mask(inputs: dict) -> torch.Tensor:
        mask = inputs["completion_mask"]  # (B, T)
        return mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]

    def _compute_loss(self, model, inputs):
        """``Σ_i w_i Σ_t -log π_c(y_it) / Σ_i w_i n_i`` over the optimizer step (plus EG-GRPO's KL term)."""
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]  # (B, P), (B, T)
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        T = completion_ids.size(1)
        # The parent's hook returns log π_c under constrained_decoding; GRPOTrainer's own is the plain softmax.
        # `_loss_inputs` stays None: the parent's GRPO loss metrics (clip ratios, advantages) do not apply here.
        score = GRPOTrainer if self.args.sft_log_probs == "full" else EGGRPOTrainer
        logps, entropies, aux_loss = score._get_per_token_logps_and_entropies(
            self,
            model,
            input_ids,
            attention_mask,
            T,
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
        )  # (B, T) each
        mask = self._loss_mask(inputs).float()  # (B, T)
        weights = inputs["sft_weights"][:, None]  # (B, 1)
        mode = "train" if self.model.training else "eval"
        # As TRL's "dapo" normaliser: the generation batch's count spans `steps_per_generation` micro-batches of
        # all processes; rescaled to one accumulation window of this process (DDP then averages the processes).
        scale = 1.0 / self.accelerator.num_processes
        # (set by Trainer.train for each accumulation window; the configured value outside it)
        accumulation = getattr(
            self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps
        )
        if mode == "train":
            scale *= accumulation / self.args.steps_per_generation
        nll = (-logps * mask * weights).sum()
        loss = nll / (inputs["sft_tokens"].clamp(min=1e-8) * scale) if inputs["sft_tokens"] > 0 else nll * 0.0
        metrics = self._metrics[mode]
        if self.beta != 0.0:
            # EG-GRPO's k3 term on the policy's own samples (never on experts, which it did not sample).
            sampled = mask * (~inputs["expert_mask"])[:, None]
            delta = inputs["ref_per_token_logps"] - logps
            kl = torch.exp(delta) - delta - 1  # (B, T)
            loss = loss + self.beta * (kl * sampled).sum() / (
                inputs["num_items_in_batch"].clamp(min=1.0) * scale
            )
            metrics["kl"].append(self._global_mean(kl.detach(), sampled))
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / (accumulation if mode == "train" else 1.0)
        metrics["rsft/nll"].append(self._global_mean(-logps.detach(), mask * weights))
        metrics["entropy"].append(self._global_mean(entropies.detach(), mask))
        return loss
