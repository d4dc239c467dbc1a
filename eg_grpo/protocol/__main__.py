"""``python -m eg_grpo.protocol --config FILE [--step tune|select|test|report|all]`` (see the package docstring)."""

from __future__ import annotations

import argparse
import time

from eg_grpo.protocol.config import ProtocolConfig

STEPS = ("tune", "select", "test", "report")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eg_grpo.protocol", description=__doc__)
    parser.add_argument(
        "--config", required=True, help="the protocol file, e.g. recipes/configs/demo/protocol/protocol.yaml"
    )
    parser.add_argument("--step", choices=(*STEPS, "all"), default="all",
                        help="one step, or all of them in order (finished runs are skipped)")  # fmt: skip
    args = parser.parse_args(argv)
    config = ProtocolConfig.load(args.config)
    from eg_grpo.protocol.report import write_report
    from eg_grpo.protocol.run import test, tune
    from eg_grpo.protocol.select import select_all

    actions = {"tune": tune, "select": select_all, "test": test, "report": write_report}
    for step in STEPS if args.step == "all" else (args.step,):
        start = time.perf_counter()
        result = actions[step](config)
        print(f"[protocol] {step}: done in {time.perf_counter() - start:.0f} s"
              + (f": {result}" if step == "report" else ""), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
