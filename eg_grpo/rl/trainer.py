"""`EGGRPOTrainer`: TRL's `GRPOTrainer` with trie-constrained rollouts and expert-guided groups.

Five hooks of the parent are wrapped, nothing is copied (see `docs/training.md`, `docs/design.md`
and TRL 1.16's `trl/trainer/grpo_trainer.py`):

- `_generate_and_score_completions(inputs)`: marks every row `is_expert=False`, plans the expert
  candidates of each group, calls the parent (which generates, scores and computes advantages on
  the spliced group), then adds `expert_mask` and logs the `eg/*` diagnostics.
- `_generate_single_turn(...)`: generates with the SID trie (sampling, or one beam search per group)
  and splices the experts into the groups before the parent decodes, masks, scores and computes
  old/ref log-probs. Everything downstream therefore sees the spliced group.
- `_get_per_token_logps_and_entropies(...)`: with `constrained_decoding`, returns the log-probs and
  entropies of the trie-constrained policy that sampled the rollouts (`eg_grpo.rl.constrained`), for the
  current, old and reference model alike, so the loss, the KL and the importance ratio are those of π_c.
- `_compute_loss(model, inputs)`: exposes `inputs` to the hook above, which gives expert rows a zero KL
  term and logs the sampled-rows-only twins of TRL's loss metrics.
- `_calculate_rewards(...)`: keeps the gathered reward matrix for the sampled-only reward metrics and the
  per-group zero-spread fraction (`eg_grpo.rl.group_stats`); with `log_completions`, queues the readable
  columns of TRL's completions table (`eg_grpo.rl.completions_log`), which `log` also logs as `eg/completions`.

With `use_vllm`, the parent's vLLM path generates and the trie runs inside vLLM as a logits processor
(`eg_grpo.rl.vllm_rollouts`, `eg_grpo.decoding.vllm_processor`); the splicing is the same.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate.utils import is_peft_model
from transformers import GenerationConfig, LogitsProcessorList
from trl import GRPOTrainer
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import pad

from eg_grpo import silence_checkpointing_alias_warnings
from eg_grpo.decoding import (
    SIDTrie,
    SIDTrieLogitsProcessor,
    isolated_generation_config,
    logits_width,
    sid_generation_config,
)
from eg_grpo.decoding.shared_prefix import supports_shared_prefix
from eg_grpo.decoding.sid_beam import beam_search_batch
from eg_grpo.rl.completions_log import add_readable_columns, log_sid_completions
from eg_grpo.rl.config import EGGRPOConfig
from eg_grpo.rl.constrained import CapturedConstrainedLogProbs, SIDSubVocabulary, head_scaling
from eg_grpo.rl.expert import experts_for_step, splice_group, strip_after_eos
from eg_grpo.rl.group_stats import group_rewards, zero_spread_group_frac
from eg_grpo.rl.trl_hooks import check_trl_hooks
from eg_grpo.rl.vllm_rollouts import (
    check_colocate_calls,
    check_server_processor,
    colocate_llm_with_trie,
    trie_generation_kwargs,
)
from eg_grpo.sid.codebook import SIDCodebook
from eg_grpo.sid.tokens import SIDVocab

EXPERT_COLUMN = "expert_completion_ids"


class EGGRPOTrainer(GRPOTrainer):
    """GRPO whose rollouts are valid SIDs and whose groups hold logged ground-truth SIDs.

    Args:
        model, reward_funcs, train_dataset, eval_dataset, processing_class, callbacks, optimizers, peft_config:
            As in [`~trl.GRPOTrainer`]. The dataset needs the columns `prompt`, `request_id` and
            `expert_completion_ids` (see `eg_grpo.data.rl_dataset`).
        args ([`EGGRPOConfig`]): the configuration; `args.sid_dir` names the codebook.
        codebook ([`SIDCodebook`], *optional*): the codebook, if already loaded; else read from `args.sid_dir`.
    """

    _tag_names = ["trl", "grpo", "eg-grpo"]

    def __init__(self, model, reward_funcs, args: EGGRPOConfig, train_dataset=None, eval_dataset=None,
                 processing_class=None, callbacks=None, optimizers=(None, None), peft_config=None,
                 codebook: SIDCodebook | None = None):  # fmt: skip
        check_trl_hooks()
        if not isinstance(args, EGGRPOConfig):
            raise TypeError(f"args must be an EGGRPOConfig, got {type(args).__name__}")
        for dataset in (train_dataset,):
            missing = {"prompt", "request_id", EXPERT_COLUMN} - set(
                getattr(dataset, "column_names", []) or []
            )
            if dataset is not None and missing:
                raise ValueError(f"the train dataset lacks column(s) {sorted(missing)}; build it with "
                                 "eg_grpo.data.rl_dataset.build_rl_dataset")  # fmt: skip
        # vLLM rollouts: the trie is a vLLM logits processor that each request opts into through
        # generation_kwargs (which TRL forwards as-is); colocated engines get the processor while TRL
        # builds them, a server must have been started with it (see eg_grpo.rl.vllm_rollouts).
        vllm_trie = args.use_vllm and args.constrained_decoding
        silence_checkpointing_alias_warnings()
        if vllm_trie:
            args.generation_kwargs = trie_generation_kwargs(
                args.generation_kwargs, args.vllm_mode, args.sid_dir
            )
        colocate = vllm_trie and args.vllm_mode == "colocate"
        with colocate_llm_with_trie() if colocate else nullcontext() as llm_calls:
            super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                             eval_dataset=eval_dataset, processing_class=processing_class, callbacks=callbacks,
                             optimizers=optimizers, peft_config=peft_config)  # fmt: skip
        if self.is_fsdp_enabled:  # the config refuses `fsdp`; this catches an FSDP plugin set up elsewhere
            raise ValueError("FSDP is not supported by EGGRPOTrainer; use DeepSpeed ZeRO-2 or ZeRO-3 instead "
                             "(accelerate_configs/zero2.yaml, zero3.yaml)")  # fmt: skip
        if colocate:
            check_colocate_calls(llm_calls)
        elif vllm_trie and self.accelerator.is_main_process:
            check_server_processor(self.vllm_generation.vllm_client.get_server_info())
        self.codebook = codebook or SIDCodebook.load(Path(args.sid_dir) / "codebook")
        self.sid_vocab = SIDVocab(self._tokenizer, self.codebook.codebook_sizes)
        sid_token_ids = self.codebook.sid_token_ids(self.sid_vocab)  # S lists of L+1 ids, ending with eos
        self._valid_sids = {tuple(ids) for ids in sid_token_ids}
        if args.max_completion_length < self.codebook.num_levels + 1:
            raise ValueError(f"max_completion_length={args.max_completion_length} cannot hold a SID of "
                             f"{self.codebook.num_levels} tokens plus the end token")  # fmt: skip
        vocab_size = logits_width(self.model)  # under ZeRO-3 the head is already partitioned here
        self.sid_trie = SIDTrie.from_sid_token_ids(sid_token_ids, vocab_size=vocab_size).to(
            self.accelerator.device
        )
        self._eos = self.sid_vocab.eos_token_id
        self._sid_subvocab = SIDSubVocabulary(self.sid_trie)
        if args.constrained_decoding:
            head_scaling(self.model.config.get_text_config())  # fails now, not at the first loss
        self._loss_inputs: dict | None = None  # the batch of the `_compute_loss` call in progress
        self._rewards_per_func: torch.Tensor | None = None  # (global rows, functions) of the last scoring
        self._plan: list[list[list[int]]] | None = None  # per row: the group's expert candidates
        self._rows: list[dict] | None = None
        self._row_diagnostics: dict[str, list] = {}

    # ----------------------------------------------------------------------------------------------
    # Hook 1: mark rows, plan experts, call the parent, log diagnostics.
    def _generate_and_score_completions(self, inputs):
        rows = [dict(row, is_expert=False) for row in inputs]
        training = self.model.training
        G = self.num_generations if training else self.num_generations_eval
        if training:
            self._check_groups(rows, G)
            self._plan = [list(row[EXPERT_COLUMN]) for row in rows]
        self._rows, self._row_diagnostics = rows, {}
        try:
            out = super()._generate_and_score_completions(rows)
        finally:
            self._plan, self._rows = None, None
        device = self.accelerator.device
        out["expert_mask"] = torch.tensor([row["is_expert"] for row in rows], dtype=torch.bool, device=device)
        if self.args.expert_advantage_weight != 1.0 and out["expert_mask"].any():
            # After the group baseline (which counts the experts' rewards): only the experts' own update scales.
            weight = torch.where(out["expert_mask"], self.args.expert_advantage_weight, 1.0)  # (B,)
            out["advantages"] = out["advantages"] * weight.view(-1, *[1] * (out["advantages"].dim() - 1))
        self._log_diagnostics(out, G, "train" if training else "eval")
        return out

    def _check_groups(self, rows: list[dict], G: int) -> None:
        if len(rows) % G:
            raise RuntimeError(f"{len(rows)} local rows do not form whole groups of {G}")
        for start in range(0, len(rows), G):
            ids = {rows[i]["request_id"] for i in range(start, start + G)}
            if len(ids) != 1:
                raise RuntimeError(
                    f"rows {start}..{start + G - 1} mix requests {sorted(ids)}; groups must be whole"
                )

    # ----------------------------------------------------------------------------------------------
    # Hook 2: constrained generation, then splicing.
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
        plan, self._plan = self._plan, None  # consumed once: a tool-loop re-entry must not splice again
        # vLLM applies the trie itself (its logits processor); continuous batching takes no processor.
        use_trie = self.args.constrained_decoding and not (
            self.use_vllm or self.use_transformers_continuous_batching
        )
        if use_trie:
            completion_ids, logprobs = self._trie_generate(prompt_ids, num_generations), None
        else:
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs
            )
        if plan is not None:
            self._splice(completion_ids, logprobs, plan, num_generations)
        self._record_row_diagnostics(completion_ids, num_generations)
        return completion_ids, logprobs

    def _generation_config(self, num_generations: int) -> GenerationConfig:
        # Every parameter is set explicitly: a model's own generation_config.json must not leak in.
        beam = self.args.rollout_mode == "beam" and self.model.training
        config = sid_generation_config(
            "beam" if beam else "sample", num=num_generations if beam else 1,
            max_new_tokens=self.codebook.num_levels + 1, eos_token_id=self._eos,
            pad_token_id=self._tokenizer.pad_token_id, temperature=self.args.temperature,
        )  # fmt: skip
        # No top_k/top_p here: the config refuses them, since the loss uses the untruncated π_c.
        config.return_dict_in_generate, config.output_scores, config.output_logits = False, False, False
        return config

    @torch.no_grad()
    def _trie_generate(self, prompt_ids: list[list[int]], num_generations: int) -> list[list[int]]:
        beam = self.args.rollout_mode == "beam" and self.model.training
        # Beam search runs once per group: its G beams are the group's G distinct SIDs.
        sources = prompt_ids[::num_generations] if beam else prompt_ids
        tensors = [torch.tensor(ids) for ids in sources]
        input_ids = pad(tensors, padding_value=self._tokenizer.pad_token_id, padding_side="left")
        attention_mask = pad([torch.ones_like(t) for t in tensors], padding_value=0, padding_side="left")
        device = self.accelerator.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)  # (R, P)
        processor = SIDTrieLogitsProcessor(self.sid_trie, input_ids.shape[1], self._tokenizer.pad_token_id)
        with unwrap_model_for_generation(
            self.model_wrapped, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation,
            gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
        ) as unwrapped, isolated_generation_config(unwrapped):  # fmt: skip
            # The SID beam search returns generate's beams (same SIDs, same order, up to float ties) at a
            # fraction of the cost. With fewer SIDs than G, generate pads each group with placeholder
            # beams, which the group needs (G rows): that case stays with generate.
            if beam and supports_shared_prefix(unwrapped) and self.sid_trie.num_sids >= num_generations:
                sequences, _ = beam_search_batch(unwrapped, input_ids, attention_mask, self.sid_trie,
                                                 num=num_generations)  # fmt: skip
                completions = sequences.flatten(0, 1).cpu()  # (groups × G, L + 1), beam order
            else:
                output = unwrapped.generate(
                    input_ids=input_ids, attention_mask=attention_mask,
                    generation_config=self._generation_config(num_generations),
                    logits_processor=LogitsProcessorList([processor]),
                )  # fmt: skip
                completions = output[:, input_ids.shape[1] :].cpu()  # (rows, T); beam: groups × G, beam order
        return [list(strip_after_eos(row.tolist(), self._eos)) for row in completions]

    def _splice(self, completion_ids, logprobs, plan, G: int) -> None:
        step = self.state.global_step
        k = experts_for_step(self.args.expert_schedule, self.args.num_expert_samples, step,
                             self.args.expert_decay_steps)  # fmt: skip
        duplicates = 0
        for start in range(0, len(completion_ids), G):
            group = completion_ids[start : start + G]
            result = splice_group(group, plan[start], k, self._eos,
                                  only_without_positive=self.args.expert_schedule == "no_positive")  # fmt: skip
            completion_ids[start : start + G] = group
            duplicates += result.duplicates
            for j in result.expert_rows:
                self._rows[start + j]["is_expert"] = True
                if logprobs is not None:  # vLLM: a NaN sampling log-prob makes the IS ratio exactly 1
                    logprobs[start + j] = [float("nan")] * len(group[j])
        self._row_diagnostics["duplicates"] = [float(duplicates)]

    # ----------------------------------------------------------------------------------------------
    # Diagnostics
    def _record_row_diagnostics(self, completion_ids, G: int) -> None:
        keys = [strip_after_eos(c, self._eos) for c in completion_ids]
        rows = self._rows or [{} for _ in keys]
        self._row_diagnostics["valid"] = [float(key in self._valid_sids) for key in keys]
        self._row_diagnostics["hit"] = [
            float(key in {tuple(e) for e in row.get(EXPERT_COLUMN, [])}) for key, row in zip(keys, rows)
        ]
        self._row_diagnostics["group_keys"] = [keys[s : s + G] for s in range(0, len(keys), G)]

    def _log_diagnostics(self, out: dict, G: int, mode: str) -> None:
        device = self.accelerator.device
        expert_mask = out["expert_mask"]
        diag = self._row_diagnostics
        sampled = ~expert_mask
        valid = torch.tensor(diag["valid"], device=device)
        hit = torch.tensor(diag["hit"], device=device)
        # Distinct SIDs among the policy's own samples of each group (experts excluded).
        flags = expert_mask.view(-1, G).tolist()
        distinct = [
            float(len({k for k, e in zip(keys, f) if not e})) for keys, f in zip(diag["group_keys"], flags)
        ]
        gather = self.accelerator.gather
        all_sampled = gather(sampled)
        metrics = self._metrics[mode]
        metrics["eg/expert_frac"].append(gather(expert_mask.float()).mean().item())
        metrics["eg/valid_sid_rate"].append(_masked_mean(gather(valid), all_sampled))
        metrics["eg/hit_rate_sampled"].append(_masked_mean(gather(hit), all_sampled))
        metrics["eg/distinct_sids_per_group"].append(
            gather(torch.tensor(distinct, device=device)).mean().item()
        )
        if "duplicates" in diag:
            metrics["eg/expert_duplicates"].append(
                gather(torch.tensor(diag["duplicates"], device=device)).sum().item()
            )
        lengths = out["completion_mask"].sum(1).float()
        metrics["eg/completion_length_sampled"].append(_masked_mean(gather(lengths), all_sampled))
        negative = (out["advantages"].view(len(expert_mask), -1)[:, 0] < 0).float()
        metrics["eg/expert_neg_adv_frac"].append(_masked_mean(gather(negative), gather(expert_mask)))
        self._log_reward_metrics(all_sampled, G, metrics)

    def _log_reward_metrics(self, all_sampled: torch.Tensor, G: int, metrics) -> None:
        # TRL's reward means mix in the experts' ground-truth rewards; these are the policy's own.
        per_func, self._rewards_per_func = self._rewards_per_func, None
        weights = self.reward_weights.to(per_func.device)
        weighted = (
            (per_func * weights).nansum(dim=1).masked_fill(torch.isnan(per_func).all(dim=1), float("nan"))
        )
        metrics["eg/reward_sampled"].append(torch.nanmean(weighted[all_sampled]).item())
        for i, name in enumerate(self.reward_func_names):
            metrics[f"eg/rewards/{name}/mean_sampled"].append(torch.nanmean(per_func[all_sampled, i]).item())
        rewards = group_rewards(per_func, weights, G, self.multi_objective_aggregation)
        metrics["eg/zero_std_group_frac"].append(zero_spread_group_frac(rewards, G))

    # ----------------------------------------------------------------------------------------------
    # Hooks 3-5: the constrained policy's log-probs, expert rows in the loss, the reward matrix.
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list, *args, **kwargs):
        rewards = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list, *args, **kwargs
        )
        self._rewards_per_func = rewards  # (global rows, functions), gathered by TRL
        if self.log_completions:  # `inputs` are the rows, `is_expert` set by the splice
            add_readable_columns(self, inputs, completion_ids_list, rewards)
        return rewards

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        super().log(logs, start_time)  # the metrics, and TRL's own completions table
        if self.log_completions and self.accelerator.is_main_process:
            log_sid_completions(self)

    def _compute_loss(self, model, inputs):
        self._loss_inputs = inputs
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._loss_inputs = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, *args, **kwargs):  # fmt: skip
        if not self.args.constrained_decoding:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, *args, **kwargs
            )
        causal_lm = self.accelerator.unwrap_model(model)
        if is_peft_model(causal_lm):  # TRL patched the base model's forward
            causal_lm = causal_lm.get_base_model()
        with CapturedConstrainedLogProbs(
            causal_lm, self._sid_subvocab, logits_to_keep, self.temperature, self.args.cast_lm_head_to_fp32
        ) as seen:
            full_logps, _, aux_loss = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, False, *args, **kwargs
            )
        constrained = seen.result()
        if self._loss_inputs is not None and model is not self.ref_model:
            self._expert_rows_in_loss(constrained.logps, constrained.entropy, full_logps)
        return constrained.logps, (constrained.entropy if compute_entropy else None), aux_loss

    def _expert_rows_in_loss(
        self, logps: torch.Tensor, entropy: torch.Tensor, full_logps: torch.Tensor
    ) -> None:
        """Zero KL on expert rows; sampled-only twins of TRL's loss metrics; the full model's valid mass.

        Called with the current policy's constrained ``logps`` (B, T) before TRL's `_compute_loss` reads
        ``ref_per_token_logps``: setting the reference to the (detached) current log-prob on expert rows
        makes TRL's k3 term and its gradient exactly zero there. The policy never sampled those rows, so
        k3 on them estimates no KL; the sampled rows carry the KL penalty.
        """
        inputs = self._loss_inputs
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)  # (B, T)
        expert = inputs["expert_mask"][:, None]  # (B, 1)
        sampled = mask * (~expert)
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        if self.beta != 0.0:
            ref = torch.where(expert, logps.detach(), inputs["ref_per_token_logps"])
            inputs["ref_per_token_logps"] = ref
            delta = ref - logps.detach()
            metrics["eg/kl_sampled"].append(self._global_mean(torch.exp(delta) - delta - 1, sampled))
        metrics["eg/entropy_sampled"].append(self._global_mean(entropy.detach(), sampled))
        # The full model's mass on the tokens the trie allows: log π - log π_c = log Z(prefix).
        valid_mass = torch.exp(full_logps.detach() - logps.detach())
        metrics["eg/valid_mass"].append(self._global_mean(valid_mass, sampled))
        metrics["eg/valid_mass_first"].append(self._global_mean(valid_mass[:, :1], sampled[:, :1]))
        old = inputs.get("old_per_token_logps")
        log_ratio = logps.detach() - (logps.detach() if old is None else old)
        if self.importance_sampling_level == "sequence":
            log_ratio = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
        coef, adv = torch.exp(log_ratio), inputs["advantages"].view(len(mask), -1)
        clipped = ((coef < 1 - self.epsilon_low) & (adv < 0)) | ((coef > 1 + self.epsilon_high) & (adv > 0))
        metrics["eg/clip_ratio/region_mean_sampled"].append(
            self._global_mean(clipped.float().expand_as(mask), sampled)
        )

    def _global_mean(self, values: torch.Tensor, weights: torch.Tensor) -> float:
        totals = torch.stack([(values * weights).sum(), weights.sum().float()])
        totals = self.accelerator.reduce(totals, reduction="sum")
        return (totals[0] / totals[1]).item() if totals[1] > 0 else float("nan")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return values[mask].mean().item() if mask.any() else float("nan")
