"""A stand-in for vLLM's colocated `LLM`, just enough for TRL's colocate path on a CPU.

It is *not* vLLM: it decodes with the transformers model of the same folder, one full forward per
step, but drives the logits processors it is given the way vLLM's v1 engine does (by class path, with
batch updates in the order removed → added → moved, live output lists, a persistent batch smaller
than the number of requests so that requests at different steps share it, and rows condensed by
moves when requests finish), and returns `processed_logprobs` (after the processors and the
temperature). The GPU tests in `test_vllm_processor.py` run the real engine.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from types import SimpleNamespace

import torch
from transformers import AutoModelForCausalLM


class MoveDirectionality(Enum):
    UNIDIRECTIONAL = 1
    SWAP = 2


@dataclass(frozen=True)
class BatchUpdate:
    batch_size: int
    removed: list
    added: list
    moved: list


@dataclass
class FakeSamplingParams:
    """The `SamplingParams` fields TRL's colocate path sets; any other keyword is a TypeError, as in vLLM."""

    n: int = 1
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    max_tokens: int = 16
    logprobs: int | None = None
    extra_args: dict | None = None
    structured_outputs: object = None


def fake_vllm_config(model_dir: str, vocab_size: int) -> SimpleNamespace:
    return SimpleNamespace(
        model_config=SimpleNamespace(tokenizer=model_dir, get_vocab_size=lambda: vocab_size)
    )


def load_processor_class(spec):
    if isinstance(spec, type):
        return spec
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


class FakeLLM:
    """``FakeLLM(model=..., logits_processors=[...], max_num_seqs=..., seed=..., **ignored)``."""

    capacity = 3  # rows of the persistent batch (fewer than the requests, so rows are reused)

    def __init__(self, model: str, logits_processors=(), seed: int = 0, **kwargs):
        self.kwargs = dict(kwargs, model=model, logits_processors=list(logits_processors or []), seed=seed)
        self.hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        vocab = self.hf.get_output_embeddings().weight.shape[0]
        self.processors = [
            load_processor_class(p)(fake_vllm_config(model, vocab), torch.device("cpu"), False)
            for p in self.kwargs["logits_processors"]
        ]
        self.generator = torch.Generator().manual_seed(seed)
        model_stub = SimpleNamespace(load_weights=self._load_weights)
        runner = SimpleNamespace(model_runner=SimpleNamespace(model=model_stub))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=runner))
        self.steps_with_mixed_lengths = 0

    @torch.no_grad()
    def _load_weights(self, weights):  # TRL's colocate weight sync: (name, tensor) pairs
        params = dict(self.hf.named_parameters())
        for name, tensor in weights:
            params[name].data.copy_(tensor)

    def reset_prefix_cache(self):
        pass

    @torch.no_grad()
    def generate(self, prompts, sampling_params, use_tqdm=False):
        sp = sampling_params
        for processor in self.processors:
            type(processor).validate_params(sp)
        eos = self.hf.config.eos_token_id
        requests = [{"prompt": list(p["prompt_token_ids"]), "out": [], "lps": []} for p in prompts]
        pending = list(range(len(requests)))
        slots: list[int | None] = []  # batch row -> request
        removed: list[int] = []
        while pending or any(s is not None for s in slots):
            added, moved = [], []
            holes = sorted(removed)
            # One admission per step (vLLM's token budget staggers them too), so requests at different
            # steps share the batch; new requests reuse freed rows first.
            for _ in range(1 if pending and (holes or len(slots) < self.capacity) else 0):
                row = holes.pop(0) if holes else len(slots)
                if row == len(slots):
                    slots.append(None)
                slots[row] = pending.pop(0)
                req = requests[slots[row]]
                added.append((row, sp, req["prompt"], req["out"]))
            removed = list(holes)  # as vLLM: a reused row is reported as added, not removed
            for hole in holes:  # condense: the last occupied row moves into each remaining hole
                last = max((i for i, s in enumerate(slots) if s is not None), default=-1)
                if last > hole:
                    slots[hole], slots[last] = slots[last], None
                    moved.append((last, hole, MoveDirectionality.UNIDIRECTIONAL))
            while slots and slots[-1] is None:
                slots.pop()
            changed = bool(removed or added or moved)
            update = BatchUpdate(len(slots), removed, added, moved) if changed else None
            for processor in self.processors:
                processor.update_state(update)
            removed = []
            active = [r for r, s in enumerate(slots) if s is not None]
            if not active:
                continue
            if len({len(requests[slots[r]]["out"]) for r in active}) > 1:
                self.steps_with_mixed_lengths += 1
            logits = torch.stack(
                [self._next_logits(requests[s] if s is not None else None) for s in slots]
            )  # (B, V)
            for processor in self.processors:
                logits = processor.apply(logits)
            logprobs = torch.log_softmax(logits / max(sp.temperature, 1e-5), dim=-1)  # processed_logprobs
            for r in active:
                req = requests[slots[r]]
                token = int(torch.multinomial(logprobs[r].exp(), 1, generator=self.generator))
                req["out"].append(token)
                req["lps"].append({token: SimpleNamespace(logprob=float(logprobs[r, token]), rank=1)})
                if token == eos or len(req["out"]) >= sp.max_tokens:
                    slots[r] = None
                    removed.append(r)
        return [
            SimpleNamespace(
                prompt_token_ids=req["prompt"],
                outputs=[
                    SimpleNamespace(
                        token_ids=list(req["out"]), logprobs=req["lps"] if sp.logprobs is not None else None
                    )
                ],
            )
            for req in requests
        ]

    def _next_logits(self, req) -> torch.Tensor:
        if req is None:  # an empty row of the persistent batch; vLLM has none, the stack needs a value
            return torch.zeros(self.hf.get_output_embeddings().weight.shape[0])
        ids = torch.tensor([req["prompt"] + req["out"]])
        return self.hf(input_ids=ids).logits[0, -1].float()
