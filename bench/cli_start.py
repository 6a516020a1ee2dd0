"""How long `customs` takes to answer before it does any work: `customs --help`, a command's help, a mistyped
command; and which heavy modules `customs --help` imports (it should import none).

Each is run ``-n`` times in a process of its own (the entry point of pyproject.toml, customs.cli:app); the median
and the fastest wall times are printed. ``--compare DIR`` runs the same against another checkout (e.g. the main
branch before issue 31) for a before/after.

    python bench/cli_start.py [-n 7] [--compare /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("prefect", "pyhanko", "weasyprint", "sqlalchemy", "sqlmodel", "uvicorn")
CASES = {
    "customs --help": ["--help"],
    "customs status --help": ["status", "--help"],
    "customs decide --help": ["decide", "--help"],
    "customs sttaus (mistyped)": ["sttaus"],
}


def run(root: Path, args: list[str], data_dir: str, script: str = "") -> tuple[float, str]:
    code = "\n".join(
        ["import sys", "from customs.cli import app", "try:", f"    app({args!r}, prog_name='customs')"]
        + ["except SystemExit:", "    pass", script]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMS_")}
    env.update(PYTHONPATH=str(root), CUSTOMS_DATA_DIR=data_dir, COLUMNS="100")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, timeout=120)
    return time.perf_counter() - started, done.stdout + done.stderr


def measure(root: Path, repeat: int) -> None:
    print(f"{root}:")
    with tempfile.TemporaryDirectory() as data_dir:
        for name, args in CASES.items():
            run(root, args, data_dir)  # warm the file cache and the .pyc files
            times = [run(root, args, data_dir)[0] for _ in range(repeat)]
            print(f"  {name:<28} median {statistics.median(times):5.2f} s   fastest {min(times):5.2f} s")
        _, output = run(root, ["--help"], data_dir, f"print('HEAVY:', *[m for m in {HEAVY!r} if m in sys.modules])")
        heavy = next((line for line in output.splitlines() if line.startswith("HEAVY:")), "HEAVY: ?")
        warned = "yes" if "Warning" in output else "no"
        print(f"  `customs --help` imports:    {heavy.removeprefix('HEAVY:').strip() or 'none of ' + ', '.join(HEAVY)}")
        print(f"  a warning on stderr:         {warned}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=7, help="runs of each case")
    parser.add_argument("--compare", type=Path, help="another checkout to measure the same way (before/after)")
    options = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {options.n} runs each\n")
    if options.compare:
        measure(options.compare.resolve(), options.n)
        print()
    measure(ROOT, options.n)


if __name__ == "__main__":
    main()
