"""Loading a user's own class or function by a dotted path ``package.module:Name`` (rewards, SID methods).

A module that is not importable as it stands is looked for in the folders of the ``--config`` files
on the command line and then in the current directory, so ``my_rewards.py`` kept beside the user's
YAML loads as ``my_rewards:MyReward`` with no ``PYTHONPATH`` set.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def config_dirs(argv: list[str] | None = None) -> list[Path]:
    """The folders of the ``--config FILE`` (or ``--config=FILE``) arguments in ``argv`` (default ``sys.argv``)."""
    argv = sys.argv if argv is None else argv
    files = [b for a, b in zip(argv, argv[1:]) if a == "--config"]
    files += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    return [Path(f).resolve().parent for f in files]


def _search_dirs() -> list[Path]:
    dirs = [*config_dirs(), Path.cwd()]
    return [d for i, d in enumerate(dirs) if d not in dirs[:i]]


def import_module(module_name: str, what: str = "module"):
    """Imports ``module_name``, else from a config folder or the current directory (see the module docstring).

    Raises:
        ImportError: naming the module, the folders tried and how to make it importable.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        if exc.name is not None and exc.name != top and not module_name.startswith(f"{exc.name}."):
            raise  # the module exists but one of its own imports is missing: that is the user's error to see
        tried = _search_dirs()
        for folder in tried:
            if (folder / f"{top}.py").exists() or (folder / top / "__init__.py").exists():
                sys.path.append(str(folder))
                return importlib.import_module(module_name)
        raise ImportError(
            f"cannot import module '{module_name}' ({what}): not on sys.path, nor a file {top}.py in "
            f"{', '.join(str(d) for d in tried)}; put it beside your config or in the working directory, "
            "or install it (pip install -e .)"
        ) from exc


def import_object(path: str, what: str = "object"):
    """``"package.module:attribute"`` → the attribute.

    Args:
        path: the dotted path.
        what: what the object is for (named in errors), e.g. ``"reward"``.

    Raises:
        ValueError: no ``:`` in ``path``.
        ImportError: the module cannot be imported (the message names the folders tried).
        AttributeError: the module has no such attribute.
    """
    if ":" not in path:
        raise ValueError(f"expected a dotted path 'package.module:Name', got {path!r}")
    module_name, _, attr = path.partition(":")
    module = import_module(module_name, f"{what} {path!r}")
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise AttributeError(f"module '{module_name}' has no attribute '{attr}' (from {path!r})") from exc
