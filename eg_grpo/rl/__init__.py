"""The RL stage's room: expert-guided GRPO on TRL and the controls trained in its place.

- ``config`` (:class:`EGGRPOConfig`), ``trainer`` (:class:`EGGRPOTrainer`, a ``GRPOTrainer`` wrapping five
  TRL hooks, checked by ``trl_hooks``), and the trainer's parts: ``expert`` (splicing expert completions into
  a group), ``constrained`` (log-probs of the trie-constrained policy), ``group_stats``, ``vllm_rollouts``
  (the trie on vLLM rollouts), ``completions_log`` (readable completions tables);
- the controls run by the same stage: ``continued_sft`` (the supervised control) and ``rejection_sft``
  (the reward-aware controls on EG-GRPO's own rollouts);
- the run around them: ``callbacks`` (held-out SID metrics, the console line), ``oracle_curves`` (the
  arena's oracle figures during training), ``inputs`` (script arguments, ``stage.json`` record, the rows
  and callbacks every objective shares) and ``stage`` (:func:`~eg_grpo.rl.stage.run`, what
  ``python -m eg_grpo.stages rl`` and ``recipes/eg_grpo.py`` call).

``from eg_grpo import EGGRPOConfig, EGGRPOTrainer`` stays the public way in; this ``__init__`` imports nothing,
so ``import eg_grpo.rl.config`` loads only what it needs. The room builds on the SFT room (its LoRA settings,
:func:`eg_grpo.sft.model.lora_config`), never the reverse; it imports ``eg_grpo.pipeline`` only inside
:func:`~eg_grpo.rl.stage.run`, to build missing earlier stages (``chain``). ``tests/test_import_structure.py``
holds the room to this line:

May import: eg_grpo, eg_grpo.arena, eg_grpo.checkpoints, eg_grpo.data, eg_grpo.decoding, eg_grpo.eval,
eg_grpo.io, eg_grpo.pipeline, eg_grpo.sft, eg_grpo.sid, eg_grpo.tracking
"""
