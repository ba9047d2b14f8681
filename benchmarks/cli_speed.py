"""Start-up time of the ``headscope`` command: ``--help``, ``patch --help`` and ``--version``.

Each command runs in a fresh process (the installed ``headscope`` script next to this
Python, else ``python -m headscope.cli``), ``--repeats`` times after one warm-up run
that fills the OS file cache; prints the median, min and max wall time per command and
whether the median is under the target (issue 21: 1.5 s on the development machine).

    python benchmarks/cli_speed.py [--repeats 5] [--target 1.5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (("--help",), ("patch", "--help"), ("--version",))


def headscope_argv() -> list[str]:
    """The ``headscope`` script beside this interpreter, else ``python -m headscope.cli``."""
    script = Path(sys.executable).with_name("headscope")
    return [str(script)] if script.exists() else [sys.executable, "-m", "headscope.cli"]


def time_command(args: tuple[str, ...], repeats: int) -> list[float]:
    """Wall times of ``repeats`` fresh runs of ``headscope ARGS`` (after one untimed warm-up)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = headscope_argv() + list(args)
    subprocess.run(argv, capture_output=True, env=env, check=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, env=env, check=True)
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--target", type=float, default=1.5, help="seconds the median should stay under [1.5]")
    args = ap.parse_args(argv)
    print(f"{'command':<26} {'median s':>9} {'min s':>7} {'max s':>7}  under {args.target} s")
    ok = True
    for cmd in COMMANDS:
        t = time_command(cmd, args.repeats)
        med = statistics.median(t)
        ok &= med < args.target
        label = "headscope " + " ".join(cmd)
        print(f"{label:<26} {med:>9.2f} {min(t):>7.2f} {max(t):>7.2f}  {'yes' if med < args.target else 'NO'}")
    print(f"(median of {args.repeats} fresh processes each; load average {os.getloadavg()[0]:.1f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
