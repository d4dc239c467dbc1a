"""Which checkpoint a run resumes from, and the command that resumes a killed run.

A machine that dies while the trainer writes ``checkpoint-N/`` leaves a truncated weights file or
no ``trainer_state.json``; transformers' ``get_last_checkpoint`` still returns it and the resume
crashes inside ``safetensors``. :func:`resolve_checkpoint` checks each candidate, newest first, and
takes the newest intact one (a warning names the damaged file). A checkpoint without optimizer
state would silently restart Adam's moments (the first steps then move the weights far more than
the schedule says), so it is an error unless the caller asks for a reset.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import struct
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (header parse + size check), or None."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                return f"{path} is truncated ({size} bytes; its header alone claims {header_len})"
            header = json.loads(f.read(header_len))
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError):
        return f"{path} has an unreadable header (truncated or not safetensors)"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if size < 8 + header_len + end:
        return f"{path} is truncated ({size} of {8 + header_len + end} bytes)"
    return None


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why ``folder`` cannot be resumed from (naming the file), or None when it is intact."""
    folder = Path(folder)
    state = folder / "trainer_state.json"
    if not state.is_file():
        return f"{state} is missing"
    try:
        json.loads(state.read_text())
    except json.JSONDecodeError:
        return f"{state} is not valid JSON (truncated)"
    index = next((folder / n for n in ("model.safetensors.index.json", "adapter_model.safetensors.index.json")
                  if (folder / n).is_file()), None)  # fmt: skip
    if index is not None:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        weights = [folder / s for s in shards]
    else:
        weights = [folder / n for n in _WEIGHTS if (folder / n).is_file()]
    if not weights:
        return f"{folder} holds no model weights ({' / '.join(_WEIGHTS)})"
    for path in weights:
        if not path.is_file():
            return f"{path} is missing"
        problem = _safetensors_problem(path) if path.suffix == ".safetensors" else None
        if problem:
            return problem
    return None


def has_optimizer_state(folder: str | Path) -> bool:
    folder = Path(folder)
    return (
        (folder / "optimizer.pt").is_file()
        or (folder / "optimizer.bin").is_file()
        or any(folder.glob("global_step*"))
    )


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` folders of ``output_dir``, newest (highest N) first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


def resolve_checkpoint(
    value: str | None, output_dir: str | Path, reset_optimizer: bool = False
) -> str | None:
    """The checkpoint to resume from for ``--resume_from_checkpoint value``.

    Args:
        value: None / ``false``: none; ``true`` / ``last``: the newest intact ``checkpoint-N`` in
            ``output_dir`` (damaged newer ones are skipped with a warning; none: start from scratch);
            anything else: that folder, which must be intact.
        output_dir: the run's output folder.
        reset_optimizer: accept a checkpoint without optimizer state (the optimizer starts afresh).

    Raises:
        FileNotFoundError: a named checkpoint does not exist.
        ValueError: a named checkpoint is damaged, every checkpoint is, or the chosen one has no
            optimizer state and ``reset_optimizer`` is off.
    """
    if value is None or str(value).lower() in ("", "false", "none"):
        return None
    if str(value).lower() in ("true", "last"):
        candidates = list_checkpoints(output_dir)
        if not candidates:
            print(f"[eg_grpo] no checkpoint in {output_dir}; starting from scratch")
            return None
        chosen = None
        for folder in candidates:
            problem = checkpoint_problem(folder)
            if problem is None:
                chosen = folder
                break
            logger.warning("skipping damaged checkpoint %s: %s", folder.name, problem)
            print(f"[eg_grpo] WARNING: skipping damaged checkpoint {folder.name}: {problem}", flush=True)
        if chosen is None:
            raise ValueError(f"every checkpoint in {output_dir} is damaged (see the warnings above); delete them "
                             "and pass --resume_from_checkpoint false to start again")  # fmt: skip
    else:
        chosen = Path(value)
        if not chosen.is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
        problem = checkpoint_problem(chosen)
        if problem:
            raise ValueError(
                f"--resume_from_checkpoint {value}: {problem}; pass an intact checkpoint or `last`"
            )
    if not has_optimizer_state(chosen):
        if not reset_optimizer:
            raise ValueError(f"{chosen} has no optimizer state (optimizer.pt): resuming would restart Adam's moments "
                             "and jolt the weights. Pass --reset_optimizer true to resume with a fresh optimizer, or "
                             "resume from another checkpoint")  # fmt: skip
        print(
            f"[eg_grpo] WARNING: {chosen} has no optimizer state; the optimizer starts afresh (--reset_optimizer)"
        )
    return str(chosen)


def whole_run_loss(
    earlier_history: list[dict], resumed_from: int, segment_loss: float, segment_steps: int
) -> float:
    """The mean training loss of a resumed run over all its steps with a known loss.

    transformers' ``train_loss`` averages the steps of one ``train()`` call only, so a resumed run
    would report the loss of its last segment. The steps before the checkpoint are known from the
    checkpoint's log history: each logged ``loss`` is the mean over its logging interval, so it is
    weighted by the interval's length. Steps between the last log and the checkpoint have no
    recorded loss and are left out (with ``logging_steps`` dividing ``save_steps``, there are none).

    Args:
        earlier_history: the checkpoint's ``trainer_state.json`` ``log_history``.
        resumed_from: the checkpoint's global step.
        segment_loss: ``train_loss`` of the resumed ``train()`` call.
        segment_steps: the steps that call trained.
    """
    total, steps, last = segment_loss * segment_steps, segment_steps, 0
    logged = sorted((e for e in earlier_history if "loss" in e and 0 < e.get("step", 0) <= resumed_from),
                    key=lambda e: e["step"])  # fmt: skip
    for entry in logged:
        if (width := entry["step"] - last) > 0:
            total, steps, last = total + float(entry["loss"]) * width, steps + width, entry["step"]
    return total / steps if steps else segment_loss


def resumed_loss_metrics(checkpoint: str | Path, segment_loss: float, global_step: int) -> dict:
    """``train_loss`` over the whole resumed run (see :func:`whole_run_loss`), the resumed segment's own
    loss as ``train_loss_resumed_segment``, and ``resumed_from_step``."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    resumed_from = int(state.get("global_step", 0))
    loss = whole_run_loss(
        state.get("log_history", []), resumed_from, segment_loss, global_step - resumed_from
    )
    return {"train_loss": loss, "train_loss_resumed_segment": segment_loss, "resumed_from_step": resumed_from}


def resume_command(argv: list[str] | None = None, launcher: str | None = None) -> str:
    """The command line that resumes this run: ``argv`` with ``--resume_from_checkpoint last``."""
    argv = list(sys.argv if argv is None else argv)
    if "--resume_from_checkpoint" in argv:
        i = argv.index("--resume_from_checkpoint")
        del argv[i : i + 2]
    argv = [a for a in argv if not a.startswith("--resume_from_checkpoint=")]
    if launcher is None:
        launcher = "accelerate launch" if "LOCAL_RANK" in os.environ else "python"
    if argv and argv[0].endswith("__main__.py"):  # python -m eg_grpo.stages rl ...
        argv = ["-m", "eg_grpo.stages", *argv[1:]]
    return " ".join([launcher, shlex.join(argv), "--resume_from_checkpoint", "last"])


class ResumeHint:
    """While active, SIGINT / SIGTERM print the command that resumes the run, then stop it as usual."""

    def __init__(self, command: str):
        self.command = command
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        print(f"\n[eg_grpo] stopped by {signal.Signals(signum).name}; resume from the newest checkpoint with:\n"
              f"  {self.command}", file=sys.stderr, flush=True)  # fmt: skip
        self.__exit__()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        return False
