"""The runtime's dependency count and installed size, as the README states them.

Builds a fresh virtual environment per variant (plain, and each extra), installs the project
into it from this checkout, and sums the files each distribution's RECORD lists (pip and
setuptools, which every venv has, are left out). Needs the package index.

    python bench/install_size.py            # plain, [postgresql], [mysql]
    python bench/install_size.py otel dbt   # other extras
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Run inside the fresh venv: the distributions it holds and their installed bytes.
MEASURE = """
import importlib.metadata as md, json, os
skip = {"pip", "setuptools", "comm100-sync"}
sizes = {}
for d in md.distributions():
    name = d.metadata["Name"]
    if name.lower() in skip:
        continue
    total = 0
    for f in d.files or []:
        try:
            total += os.path.getsize(d.locate_file(f))
        except OSError:
            pass
    sizes[name] = total
print(json.dumps(sizes))
"""


def measure(extra: str | None) -> tuple[int, float, float]:
    """(distributions, MB installed, seconds to install) for the project with `extra`."""
    target = f"{REPO}[{extra}]" if extra else str(REPO)
    with tempfile.TemporaryDirectory() as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        started = time.perf_counter()
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", target],
            check=True,
        )
        seconds = time.perf_counter() - started
        out = subprocess.run([python, "-c", MEASURE], check=True, capture_output=True, text=True)
    sizes: dict[str, int] = json.loads(out.stdout)
    return len(sizes), sum(sizes.values()) / 1e6, seconds


def main(argv: list[str]) -> None:
    variants: list[str | None] = [None, *argv] if argv else [None, "postgresql", "mysql"]
    print("| install | dependencies | installed size | install time |")
    print("|---|---|---|---|")
    for extra in variants:
        count, megabytes, seconds = measure(extra)
        name = f"comm100-sync[{extra}]" if extra else "comm100-sync"
        print(f"| `{name}` | {count} | {megabytes:.1f} MB | {seconds:.1f} s |")


if __name__ == "__main__":
    main(sys.argv[1:])
