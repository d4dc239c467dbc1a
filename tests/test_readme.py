"""The Python example the README points to (docs/python.md, "Train and recall") runs as written (on the
tiny artifacts instead of `runs/`)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def _python_example() -> str:
    section = README.read_text().split("## Train and recall", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_example_trains_and_recalls(tiny_data_dir, tiny_sid_dir, tiny_sft_dir, tmp_path, capsys):
    code = _python_example()
    paths = 'data_dir, sid_dir, sft_dir, out = "runs/data", "runs/sids", "runs/sft", "runs/eg_grpo"'
    assert paths in code, "the example's first lines changed: update this test with them"
    code = code.replace(paths, f"data_dir, sid_dir, sft_dir, out = {str(tiny_data_dir)!r}, {str(tiny_sid_dir)!r}, "
                               f"{str(tiny_sft_dir)!r}, {str(tmp_path / 'eg_grpo')!r}")  # fmt: skip
    code = code.replace("max_steps=20", "max_steps=2")
    namespace: dict = {}
    exec(compile(code, "docs/python.md", "exec"), namespace)  # the doc's own code, nothing else
    assert namespace["trainer"].state.global_step == 2
    items = eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < len(items) <= 200 and len(set(items)) == len(items)
    assert set(items) <= set(namespace["log"].items["item_id"].tolist())
