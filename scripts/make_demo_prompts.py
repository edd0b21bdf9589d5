#!/usr/bin/env python
"""Write the offline demo's prompts: ``pipelines/data/arithmetic_prompts.jsonl``.

One JSON object per line: ``{"question": "What is 35+47?", "answer": "82"}`` (the answer is a
string: compare it with the stripped response). Rows are distinct 2-digit additions drawn,
with a fixed seed, from the problems the demo teacher never trained on
(``distillflow.testing.demo.is_heldout``), so the demo measures generalisation, not recall.

    python scripts/make_demo_prompts.py            # 600 rows, seed 2024
    python scripts/make_demo_prompts.py --n 100 --out /tmp/prompts.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distillflow.testing import demo  # noqa: E402


def make_rows(n: int, seed: int) -> list[dict]:
    return [
        {"question": demo.format_question(a, b), "answer": str(a + b)}
        for a, b in demo.sample_problems(n, seed=seed, heldout=True)
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "pipelines" / "data" / "arithmetic_prompts.jsonl")
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--seed", type=int, default=2024)
    args = p.parse_args(argv)
    rows = make_rows(args.n, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
