"""examples/quickstart/arithmetic.py: the arithmetic task, its character tokenizer, student and teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.quickstart import arithmetic as demo

ROOT = Path(__file__).resolve().parents[2]


def test_questions_parse_and_verify():
    assert demo.format_question(35, 47) == "What is 35+47?"
    assert demo.parse_question("What is 35+47?") == (35, 47)
    assert demo.parse_question("35 + 47 =") == (35, 47)
    assert demo.parse_question("Say hi") is None
    assert demo.check_answer("What is 35+47?", " 82\n")
    assert not demo.check_answer("What is 35+47?", "28")
    assert not demo.check_answer("Say hi", "hi")


def test_split_is_disjoint_and_deterministic():
    held = demo.sample_problems(300, seed=1, heldout=True)
    train = demo.sample_problems(300, seed=1, heldout=False)
    assert held == demo.sample_problems(300, seed=1, heldout=True)
    assert len(set(held)) == 300 and not set(held) & set(train)
    assert all(demo.is_heldout(a, b) for a, b in held)
    lo, hi = demo.OPERAND_RANGE
    stream = demo.iter_training_problems(0)
    assert not any(demo.is_heldout(*next(stream)) for _ in range(2000))
    share = sum(demo.is_heldout(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)) / (hi - lo + 1) ** 2
    assert 0.12 < share < 0.18


def test_char_tokenizer_round_trips():
    tok = demo.build_char_tokenizer()
    for text in ["What is 35+47?", "Hello, world!\n\tA ~ {x}  ", "82"]:
        ids = tok(text)["input_ids"]
        assert len(ids) == len(text)
        assert tok.decode(ids, skip_special_tokens=True) == text
    chat = [{"role": "user", "content": "What is 35+47?"}, {"role": "assistant", "content": "82"}]
    assert tok.apply_chat_template(chat, tokenize=False) == "<|user|>What is 35+47?<|end|><|assistant|>82<|end|>"
    enc = tok.apply_chat_template(chat, return_assistant_tokens_mask=True, return_dict=True)
    answer = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(answer) == "82<|end|>"


def test_demo_student(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = demo.build_demo_student(tmp_path / "student")
    assert demo.build_demo_student(path) == path  # idempotent
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    teacher_tok = AutoTokenizer.from_pretrained(demo.demo_teacher_path())
    assert tok.get_vocab() == teacher_tok.get_vocab()
    assert tok.chat_template == teacher_tok.chat_template


def test_demo_prompts_file():
    """Distinct 2-digit additions with correct answers (drawn from all problems: the student needs
    thousands; the pipeline's ``source.heldout`` keeps its evaluation prompts out of training)."""
    path = ROOT / "examples" / "quickstart" / "data" / "arithmetic_prompts.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) >= 500
    assert len({r["question"] for r in rows}) == len(rows)
    lo, hi = demo.OPERAND_RANGE
    for r in rows:
        a, b = demo.parse_question(r["question"])
        assert r["answer"] == str(a + b) and lo <= a <= hi and lo <= b <= hi


def test_sample_problems_refuses_more_than_exist():
    with pytest.raises(ValueError, match="only"):
        demo.sample_problems(5000, seed=0, heldout=True)


def test_demo_teacher_is_small_and_good():
    """The committed teacher: < 10 MB, and it adds held-out 2-digit numbers (greedy)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = demo.demo_teacher_path()
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    assert size < 10_000_000
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    problems = demo.sample_problems(100, seed=7, heldout=True)
    chats = [[{"role": "user", "content": demo.format_question(a, b)}] for a, b in problems]
    enc = tok.apply_chat_template(chats, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=6)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    correct = sum(t.strip() == str(a + b) for (a, b), t in zip(problems, texts))
    assert correct >= 85, f"teacher answered {correct}/100 held-out problems"
    report = json.loads((path / "training_report.json").read_text())
    assert report["greedy_exact_match"] >= 0.9


def test_shipped_student_subtracts_but_cannot_add():
    """The demo's student base (examples/quickstart/train_student.py) is 'pretrained': it knows the format
    and subtraction, and none of the additions it is distilled on."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ROOT / "examples" / "quickstart" / "models" / "student"
    report = json.loads((path / "training_report.json").read_text())
    assert report["greedy_subtraction_exact_match"] >= 0.95 and report["greedy_addition_exact_match"] <= 0.01
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert sum(p.numel() for p in model.parameters()) < 0.6 * sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(demo.demo_teacher_path()).parameters())

    def greedy(questions):
        enc = tok.apply_chat_template([[{"role": "user", "content": q}] for q in questions],
                                      add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=False, max_new_tokens=6)
        return [t.strip() for t in tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]

    pairs = demo.sample_problems(60, seed=3, heldout=True)
    subs = [(max(a, b), min(a, b)) for a, b in pairs]
    got = greedy([f"What is {a}-{b}?" for a, b in subs])
    assert sum(g == str(a - b) for g, (a, b) in zip(got, subs)) >= 50
    got = greedy([demo.format_question(a, b) for a, b in pairs])
    assert sum(demo.check_answer(demo.format_question(a, b), g) for g, (a, b) in zip(got, pairs)) <= 3


def test_student_training_replica_runs(tmp_path):
    """examples/quickstart/student_training_replica.py (docs/demo.md's notes on the student's starting point)."""
    import subprocess
    import sys

    rows = [json.loads(line) for line in (ROOT / "examples" / "quickstart" / "data" / "arithmetic_prompts.jsonl").read_text().splitlines()[:40]]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["question"], "response": r["answer"]}) + "\n" for r in rows))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart" / "student_training_replica.py"), "--data", str(data),
                           "--init", str(ROOT / "examples" / "quickstart" / "models" / "student"), "--steps", "4",
                           "--eval-every", "2", "--batch", "8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "40 rows, wrong 0.0%" in proc.stdout
    assert "step 4 " in proc.stdout and "final greedy" in proc.stdout
