"""False-positive rate of each screen rule on benign answers (and its hit rate on the test positives).

    python -m benchmarks.screen_fpr            # prints a markdown table; the README's table is its output

The benign corpus is benchmarks/data/screen_benign.txt (answers separated by "=====" lines); the
positives are the per-rule examples of tests/steps/screen_cases.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distillflow.steps.screen import RULES, category_label, screen_text  # noqa: E402
from tests.steps.screen_cases import CASES  # noqa: E402


def benign_answers(path: Path = ROOT / "benchmarks" / "data" / "screen_benign.txt") -> list[str]:
    blocks = path.read_text(encoding="utf-8").split("\n=====\n")
    return [b.strip() for b in blocks[1:] if b.strip()]  # block 0 is the header


def main() -> None:
    answers = benign_answers()
    any_hit = 0
    hits_by_rule = {name: [] for name in RULES}
    for i, text in enumerate(answers):
        fired = screen_text(text, list(RULES.values()))
        any_hit += bool(fired)
        for rule, _at, _hit in fired:
            hits_by_rule[rule.name].append(i)
    print("| rule | category | false positives on benign answers | fires on its positives |")
    print("| --- | --- | --- | --- |")
    for name, rule in RULES.items():
        fp = hits_by_rule[name]
        pos = CASES[name][0]
        tp = sum(bool(screen_text(t, [rule])) for t in pos)
        where = f" (answer {', '.join(str(i + 1) for i in fp)})" if fp else ""
        print(f"| `{name}` | {category_label(rule.category)} | {len(fp)}/{len(answers)} = {100 * len(fp) / len(answers):.1f}%{where} "
              f"| {tp}/{len(pos)} |")
    print(f"answers={len(answers)} any_rule_fired={any_hit} fpr_all_rules={100 * any_hit / len(answers):.1f}%")


if __name__ == "__main__":
    main()
