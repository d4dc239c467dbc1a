"""``python -m eg_grpo.serve --model_dir DIR --sid_dir DIR [--port 8000 ...]``: serves until Ctrl-C."""

import sys
import time

from eg_grpo.serve import ServeConfig, start, stop


def main(argv: list[str] | None = None) -> int:
    config = ServeConfig.from_args(argv)
    url = start(config)
    print(f"recall service at {url} (POST /recall, GET /healthz); Ctrl-C stops it", flush=True)
    try:
        while True:  # Serve runs in Ray's actors; this process only keeps them alive
            time.sleep(3600)
    except KeyboardInterrupt:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
