#!/usr/bin/env python
"""Write the offline demo's prompts: ``examples/quickstart/data/arithmetic_prompts.jsonl``.

One JSON object per line: ``{"question": "What is 35+47?", "answer": "82"}`` (the answer is a
string: compare it with the stripped response). Rows are distinct 2-digit additions drawn with a
fixed seed. ``--split all`` (the default) draws from all 8,100 problems — the student needs
thousands of distinct prompts to learn addition, more than the ~1,200 problems the teacher never
trained on; ``--split heldout`` draws only from those (``examples.quickstart.arithmetic.is_heldout``).
Either way the pipeline's ``source.heldout`` reserves the student's evaluation prompts before
generation, so the student is never evaluated on a problem it was trained on.

    python examples/quickstart/make_prompts.py            # 4,000 rows from all problems, seed 2024
    python examples/quickstart/make_prompts.py --n 100 --split heldout --out /tmp/prompts.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from examples.quickstart import arithmetic as demo  # noqa: E402


def _sample_all(n: int, seed: int) -> list[tuple[int, int]]:
    import random

    lo, hi = demo.OPERAND_RANGE
    problems = [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)]
    if n > len(problems):
        raise SystemExit(f"--n {n}: there are only {len(problems)} distinct problems")
    return random.Random(seed).sample(problems, n)


def make_rows(n: int, seed: int, split: str = "all") -> list[dict]:
    problems = _sample_all(n, seed) if split == "all" else demo.sample_problems(n, seed=seed, heldout=True)
    return [{"question": demo.format_question(a, b), "answer": str(a + b)} for a, b in problems]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "examples" / "quickstart" / "data" / "arithmetic_prompts.jsonl")
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--split", choices=("all", "heldout"), default="all",
                   help="draw from all problems (default) or only those the teacher never trained on")
    p.add_argument("--seed", type=int, default=2024)
    args = p.parse_args(argv)
    rows = make_rows(args.n, args.seed, args.split)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
