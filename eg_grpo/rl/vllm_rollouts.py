"""Trie-constrained rollouts on TRL's vLLM path: the request arguments and how the processor gets loaded.

TRL 1.16 passes no logits processor to vLLM (see `trl/generation/vllm_generation.py` in TRL 1.16), so:

- **colocate**: `VLLMGeneration._init_vllm` builds ``LLM(...)`` from the module global
  `trl.generation.vllm_generation.LLM`. :func:`colocate_llm_with_trie` swaps that global, only while the
  trainer is constructed, for a wrapper that appends our processor to ``logits_processors``, and
  records the call so the trainer can fail loudly when TRL no longer builds the engine there. This is
  less fragile than a `VLLMGeneration` subclass, which would have to copy `_init_vllm` (~80 lines) and
  patch `GRPOTrainer`'s own reference to the class anyway.
- **server**: the server is another process, started with our processor
  (`recipes/vllm_serve.py`); :func:`check_server_processor` reads the server's `/server_info` at
  start-up and refuses to train if the processor is not loaded (requests would then silently run
  unconstrained: vLLM ignores unknown `vllm_xargs`).
- **both**: every request opts in through ``generation_kwargs``, which TRL forwards as-is:
  ``{"extra_args": {"sid_trie": sid_dir}}`` goes into `SamplingParams(**generation_kwargs)` (colocate),
  ``{"vllm_xargs": {"sid_trie": sid_dir}}`` into the `/v1/completions` body (server), see
  :func:`trie_generation_kwargs`.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from eg_grpo.decoding.vllm_processor import PROCESSOR_FQCN, REQUEST_ARG

logger = logging.getLogger(__name__)

_REQUEST_FIELD = {"colocate": "extra_args", "server": "vllm_xargs"}
_TRL_VLLM_MODULE = "trl.generation.vllm_generation"
SERVE_COMMAND = "python recipes/vllm_serve.py --model MODEL_DIR"


def trie_generation_kwargs(generation_kwargs: dict | None, vllm_mode: str, sid_dir: str) -> dict:
    """``generation_kwargs`` plus the per-request argument that opts every rollout into the SID trie.

    Idempotent; the other mode's field loses its ``sid_trie`` entry (colocate's `SamplingParams` would
    reject a ``vllm_xargs`` keyword, and a server ignores ``extra_args``).

    Args:
        generation_kwargs: `GRPOConfig.generation_kwargs` (may be None).
        vllm_mode: ``"colocate"`` or ``"server"``.
        sid_dir: the SID folder; made absolute, since a server may run from another working directory.
    """
    if vllm_mode not in _REQUEST_FIELD:
        raise ValueError(f"vllm_mode must be one of {sorted(_REQUEST_FIELD)}, got {vllm_mode!r}")
    kwargs = dict(generation_kwargs or {})
    for mode, key in _REQUEST_FIELD.items():
        if mode != vllm_mode and isinstance(kwargs.get(key), dict):
            rest = {k: v for k, v in kwargs[key].items() if k != REQUEST_ARG}
            if rest:
                kwargs[key] = rest
            else:
                kwargs.pop(key)
    key = _REQUEST_FIELD[vllm_mode]
    kwargs[key] = {**(kwargs.get(key) or {}), REQUEST_ARG: os.path.abspath(sid_dir)}
    return kwargs


@contextmanager
def colocate_llm_with_trie() -> Iterator[list[dict]]:
    """While active, TRL's colocated ``LLM(...)`` is built with our processor in ``logits_processors``.

    Yields:
        The list of keyword arguments of every ``LLM`` built meanwhile (empty afterwards = TRL built none
        through this symbol, which the trainer turns into an error).

    Raises:
        RuntimeError: when `trl.generation.vllm_generation` has no ``LLM`` (vLLM not installed, or TRL moved
            the engine construction).
    """
    module = importlib.import_module(_TRL_VLLM_MODULE)
    original = getattr(module, "LLM", None)
    if original is None:
        raise RuntimeError(
            f"{_TRL_VLLM_MODULE} has no `LLM`: install the vLLM extra (`pip install -e '.[vllm]'`); if it is "
            "installed, this TRL no longer builds vLLM there and eg-grpo (pinned to trl 1.16.x) cannot add the "
            "SID trie to colocated generation"
        )
    calls: list[dict] = []

    def llm_with_trie(*args, **kwargs):
        processors = list(kwargs.get("logits_processors") or [])
        if PROCESSOR_FQCN not in processors:
            processors.append(PROCESSOR_FQCN)  # by name: picklable if vLLM runs its engine in a subprocess
        kwargs["logits_processors"] = processors
        calls.append(dict(kwargs))
        return original(*args, **kwargs)

    module.LLM = llm_with_trie
    try:
        yield calls
    finally:
        module.LLM = original


def check_colocate_calls(calls: list[dict]) -> None:
    """Raises `RuntimeError` unless TRL built its colocated engine through the patched ``LLM``."""
    if not calls:
        raise RuntimeError(
            f"TRL built no vLLM engine through {_TRL_VLLM_MODULE}.LLM, so the SID trie is not loaded and rollouts "
            "would be unconstrained; eg-grpo is pinned to trl 1.16.x — install `trl>=1.16,<1.17`"
        )


def check_server_processor(server_info: dict) -> None:
    """Raises `RuntimeError` when a vLLM server's config shows it runs without our logits processor.

    Args:
        server_info: the ``vllm_config`` JSON tree of the server's ``/server_info`` (what
            `VLLMClient.get_server_info` returns).
    """
    model_config = server_info.get("model_config") if isinstance(server_info, dict) else None
    processors = model_config.get("logits_processors") if isinstance(model_config, dict) else None
    if not isinstance(processors, list):
        logger.warning("Could not read the vLLM server's logits processors from /server_info; make sure it was "
                       "started with `%s` (or `--logits-processors %s`)", SERVE_COMMAND, PROCESSOR_FQCN)  # fmt: skip
        return
    name = PROCESSOR_FQCN.split(":")[1]
    if not any(name in str(p) for p in processors):
        raise RuntimeError(
            f"the vLLM server runs without the SID trie (logits_processors={processors}), so constrained_decoding "
            f"would silently sample unconstrained SIDs. Restart it with `{SERVE_COMMAND}` (or add "
            f"`--logits-processors {PROCESSOR_FQCN}` to `vllm serve`), or set constrained_decoding=false"
        )
