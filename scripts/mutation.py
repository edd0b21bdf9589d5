"""`make mutation`: mutation testing of the core pure-Python modules with mutmut (issue 15).

Runs `mutmut run` with the configuration in pyproject.toml ([tool.mutmut]: the expression language,
the verifiers, the curation steps and the source reader, with the tests that own them), then prints
one line per module — mutants, killed, survived, other — and the surviving mutants' names
(`mutmut show NAME` prints a mutant's diff). Not part of `make test`: it takes minutes.

    python scripts/mutation.py [--max-children N]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = Path(sys.executable).with_name("mutmut")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-children", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    args = ap.parse_args(argv)
    if not MUTMUT.exists():
        print("mutmut is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([str(MUTMUT), "run", "--max-children", str(args.max_children)], cwd=ROOT, env=env)
    if run.returncode != 0:
        print(f"mutmut run failed (exit {run.returncode}); see its output above", file=sys.stderr)
        return run.returncode
    res = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=ROOT, env=env, capture_output=True, text=True)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    survivors: list[str] = []
    for line in res.stdout.splitlines():
        m = re.match(r"\s*(\S+?)\.x.*?:\s*(\w[\w ]*)$", line)
        if not m:
            continue
        module, status = m.group(1), m.group(2).strip()
        counts[module][status] += 1
        counts[module]["mutants"] += 1
        if status == "survived":
            survivors.append(line.split(":")[0].strip())
    for module, c in sorted(counts.items()):
        other = c["mutants"] - c["killed"] - c["survived"]
        print(f"{module}: mutants={c['mutants']} killed={c['killed']} survived={c['survived']} other={other}")
    if survivors:
        print(f"\n{len(survivors)} surviving mutant(s) (`mutmut show NAME` prints the change):")
        print("\n".join(f"  {s}" for s in survivors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
