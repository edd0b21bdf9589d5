"""train.mode: kd — the KD export read by Axolotl's own KD loader and collator, the tokenizer check,
the teacher check and the rendered config validated by Axolotl (with its KD plugin's schema)."""

from __future__ import annotations

import json
import shutil

import pytest

from distillflow.errors import ConfigurationError


def _student_tok():
    from transformers import AutoTokenizer

    from examples.quickstart.arithmetic import demo_teacher_path

    return AutoTokenizer.from_pretrained(str(demo_teacher_path().parent / "student"))


def _tops_for(answer: str, tok, k: int = 3) -> list[list[list]]:
    """Synthetic teacher top-k whose best entry is the true next token (answer tokens, then <|end|>)."""
    ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return [[[f"token_id:{i}", -0.1]] + [[f"token_id:{(i + d) % 10 + 20}", -3.0 - d] for d in range(1, k)]
            for i in ids]


def test_kd_rows_line_up_with_axolotl_kd_loader_and_collator():
    pytest.importorskip("axolotl")
    from axolotl.integrations.kd.chat_template import load
    from axolotl.integrations.kd.collator import DataCollatorForKD
    from axolotl.utils.dict import DictDefault

    from distillflow.train.kd import kd_fields

    tok = _student_tok()
    rows = []
    for q, a in [("What is 12+30?", "42"), ("What is 99+99?", "198"), ("What is 5+7?", "12")]:
        messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        fields = kd_fields(messages, _tops_for(a, tok), tok, top_k=3)
        assert fields is not None and all(len(p) == 3 for p in fields["logprobs"])
        rows.append({"messages": messages, **fields})
    cfg = DictDefault({"chat_template": "tokenizer_default", "sequence_len": 64, "train_on_inputs": False,
                       "kd_temperature": 1.0})
    ds_cfg = {"type": "axolotl.integrations.kd.chat_template", "field_messages": "messages",
              "message_property_mappings": {"role": "role", "content": "content"}, "roles_to_train": ["assistant"],
              "train_on_eos": "turn", "logprobs_field": "logprobs", "temperature": 1.0}
    strategy = load(tok, cfg, ds_cfg)
    samples = [strategy.tokenize_prompt(json.loads(json.dumps(r))) for r in rows]
    for row, s in zip(rows, samples):
        ids, labels = s["input_ids"], s["labels"]
        assert len(s["target_logprobs"]) == len(s["target_token_ids"]) == len(s["target_mask"]) == len(ids)
        trained = [p for p, lab in enumerate(labels) if lab != -100]
        answer = tok(row["messages"][-1]["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert [ids[p] for p in trained] == answer  # Axolotl trains the answer and its end-of-turn token
        for p in range(len(ids) - 1):
            if s["target_mask"][p][0]:
                # the trainer compares position p (which predicts token p + 1) with entry p
                assert s["target_token_ids"][p][0] == ids[p + 1], (p, s["target_token_ids"][p], ids)
        # the position before the answer carries the teacher's distribution over the answer's first token
        assert s["target_token_ids"][trained[0] - 1][0] == answer[0]
    batch = DataCollatorForKD(tokenizer=tok)(samples)
    assert tuple(batch["target_logprobs"].shape)[0] == 3 and batch["target_logprobs"].shape[-1] == 3
    assert batch["target_token_ids"].shape == batch["target_mask"].shape
    assert batch["input_ids"].shape[1] == batch["target_mask"].shape[1]


def test_kd_fields_maps_token_text_and_refuses_short_topk():
    from distillflow.train.kd import kd_fields

    tok = _student_tok()
    messages = [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "2"}]
    # OpenAI-style token text is mapped through the student's tokenizer
    tops = [[["2", -0.01], ["3", -5.0]], [["<|end|>", -0.001], ["1", -7.5]]]
    f = kd_fields(messages, tops, tok, top_k=2)
    two, three, end, one = (tok.convert_tokens_to_ids(t) for t in ("2", "3", "<|end|>", "1"))
    assert f["target_token_ids"][:2] == [[two, three], [end, one]]
    assert f["logprobs"][:2] == [[-0.01, -5.0], [-0.001, -7.5]]
    assert kd_fields(messages, tops, tok, top_k=3) is None  # fewer alternatives than top_k


def test_tokenizer_check_passes_for_the_demo_pair_and_names_the_difference(tmp_path):
    from examples.quickstart.arithmetic import demo_teacher_path
    from tests.support.tiny import build_tiny_chat_model
    from distillflow.train.kd import check_tokenizers

    teacher = demo_teacher_path()
    check_tokenizers(str(teacher), str(teacher.parent / "student"))  # the demo pair shares its tokenizer
    other = build_tiny_chat_model(tmp_path / "other")
    with pytest.raises(ConfigurationError) as e:
        check_tokenizers(str(teacher), str(other), "teacher")
    msg = str(e.value)
    assert "teacher 'teacher'" in msg and "share a tokenizer" in msg and "train.mode: sft" in msg
    assert "only in the teacher's" in msg


def _kd_pipeline(teachers, train_extra=None, step_params=None):
    from distillflow.spec.loader import validate_data

    step = {"kind": "generate"}
    if step_params:
        step["params"] = step_params
    return validate_data({
        "name": "kd", "source": {"kind": "inline", "rows": [{"q": "1+1?"}], "columns": {"prompt": "q"}},
        "teachers": teachers, "steps": [step],
        "train": {"base_model": "student", "mode": "kd", **(train_extra or {})},
    })


def test_kd_is_a_validation_error_naming_a_teacher_without_logprobs():
    from distillflow.errors import SpecError

    claude = {"name": "claude", "provider": "anthropic", "model": "claude-x", "api_key_env": "ANTHROPIC_API_KEY"}
    with pytest.raises(SpecError) as e:
        _kd_pipeline([claude])
    assert "teacher 'claude' (provider anthropic) returns none" in str(e.value)
    assert [p.path for p in e.value.problems] == ["train.mode"]  # located, not "<root>"
    gpt = {"name": "gpt", "provider": "openai", "model": "gpt-x"}
    with pytest.raises(SpecError) as e:
        _kd_pipeline([gpt])
    assert "teacher 'gpt' is not asked for any" in str(e.value) and "top_logprobs: 5" in str(e.value)
    ok = _kd_pipeline([gpt], step_params={"top_logprobs": 5})
    assert ok.train.mode == "kd"
    with pytest.raises(SpecError) as e:
        _kd_pipeline([{**gpt, "params": {"top_logprobs": 3}}], {"kd": {"top_k": 5}})
    assert "train.kd.top_k: 5 exceeds the 3" in str(e.value)
    assert [p.path for p in e.value.problems] == ["train.kd.top_k"]


def test_a_kd_problem_in_yaml_names_the_key_and_its_line(tmp_path):
    from distillflow.errors import SpecError
    from distillflow.spec.loader import load_spec

    (tmp_path / "p.yaml").write_text(
        "name: kd\n"
        "source: {kind: inline, rows: [{q: '1+1?'}], columns: {prompt: q}}\n"
        "teachers:\n"
        "  - {name: claude, provider: anthropic, model: claude-x, api_key_env: ANTHROPIC_API_KEY}\n"
        "steps:\n"
        "  - kind: generate\n"
        "train:\n"
        "  base_model: student\n"
        "  mode: kd\n")
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "p.yaml")
    assert str(e.value.problems[0]).startswith("train.mode (line 9): kd needs token log-probabilities")


def test_kd_config_renders_and_passes_axolotls_validator(make_run, curated_row):
    pytest.importorskip("axolotl")
    from examples.quickstart.arithmetic import demo_teacher_path
    from distillflow.train import prepare

    tok = _student_tok()
    teacher = demo_teacher_path()
    rows = []
    for i in range(6):
        row = curated_row(i, system=None)
        row["teacher_top_logprobs"] = _tops_for(row["response"], tok, k=4)
        rows.append(row)
    rows.append(curated_row(99, system=None))  # no logprobs: left out, counted
    run = make_run({"base_model": str(teacher.parent / "student"), "mode": "kd", "gpus_per_node": 0,
                    "kd": {"alpha": 0.8, "ce_alpha": 0.2, "temperature": 2.0}, "micro_batch_size": 2},
                   rows=rows, teachers=[{"name": "teacher", "provider": "transformers", "model": str(teacher),
                                         "params": {"top_logprobs": 4}}])
    plan = prepare(run)
    cfg = plan.rendered.config
    assert cfg["plugins"] == ["axolotl.integrations.kd.KDPlugin"]
    assert (cfg["kd_trainer"], cfg["kd_alpha"], cfg["kd_ce_alpha"], cfg["kd_temperature"]) == (True, 0.8, 0.2, 2.0)
    assert cfg["datasets"][0]["type"] == "axolotl.integrations.kd.chat_template"
    assert cfg["datasets"][0]["logprobs_field"] == "logprobs"
    assert plan.export.rows == 6 and plan.export.excluded == {"no teacher log-probabilities": 1}
    first = json.loads(plan.dataset_path.read_text().splitlines()[0])
    assert set(first) == {"id", "teacher", "messages", "logprobs", "target_token_ids"}
    assert all(len(p) == 4 for p in first["logprobs"])


def test_kd_refuses_a_student_with_another_tokenizer(make_run, curated_row, tmp_path):
    from examples.quickstart.arithmetic import demo_teacher_path
    from tests.support.tiny import build_tiny_chat_model
    from distillflow.train import prepare

    other = build_tiny_chat_model(tmp_path / "other_student")
    run = make_run({"base_model": str(other), "mode": "kd", "gpus_per_node": 0},
                   teachers=[{"name": "teacher", "provider": "transformers", "model": str(demo_teacher_path()),
                              "params": {"top_logprobs": 4}}])
    with pytest.raises(ConfigurationError, match="teacher 'teacher' .* differ"):
        prepare(run)
    assert not (run / "train" / "dataset.jsonl").exists()


def test_kd_batch_of_rows_of_different_lengths_stays_aligned(make_run, curated_row):
    """Axolotl's KD collator pads the teacher's entries on the right whatever the tokenizer's padding side,
    while ``input_ids``/``labels`` follow it: the demo student pads on the left, so rows shorter than their
    batch had their KD targets shifted by the padding (taught the wrong next token). The rendered config
    must make Axolotl load a tokenizer with which every KD entry, after its loader and collator, still
    names the next token of its position."""
    pytest.importorskip("axolotl")
    from transformers import AutoTokenizer
    from axolotl.integrations.kd.chat_template import load
    from axolotl.integrations.kd.collator import DataCollatorForKD
    from axolotl.utils.dict import DictDefault

    from examples.quickstart.arithmetic import demo_teacher_path
    from distillflow.train import prepare

    tok = _student_tok()
    assert tok.padding_side == "left"  # the case this guards: a student whose tokenizer pads on the left
    teacher = demo_teacher_path()
    rows = []
    for i in (3, 9, 41, 99, 120, 998):  # answers of 1 to 3 digits, prompts of different lengths
        row = curated_row(i, system=None)
        row["teacher_top_logprobs"] = _tops_for(row["response"], tok, k=4)
        rows.append(row)
    run = make_run({"base_model": str(teacher.parent / "student"), "mode": "kd", "gpus_per_node": 0},
                   rows=rows, teachers=[{"name": "teacher", "provider": "transformers", "model": str(teacher),
                                         "params": {"top_logprobs": 4}}])
    plan = prepare(run)
    cfg = DictDefault(plan.rendered.config)
    axo_tok = AutoTokenizer.from_pretrained(cfg.tokenizer_config or cfg.base_model)  # what Axolotl loads
    assert axo_tok.get_vocab() == tok.get_vocab() and axo_tok.chat_template == tok.chat_template
    strategy = load(axo_tok, DictDefault({**cfg, "train_on_inputs": False}), cfg.datasets[0])
    exported = [json.loads(line) for line in plan.dataset_path.read_text().splitlines()]
    samples = [strategy.tokenize_prompt({k: r[k] for k in ("messages", "logprobs", "target_token_ids")})
               for r in exported]
    assert len({len(s["input_ids"]) for s in samples}) > 1
    batch = DataCollatorForKD(tokenizer=axo_tok)(samples)
    ids, labels, real = batch["input_ids"], batch["labels"], batch["attention_mask"]
    tt, tm = batch["target_token_ids"], batch["target_mask"]
    for b in range(ids.shape[0]):
        last = max(p for p in range(ids.shape[1]) if real[b, p])
        kd = [p for p in range(ids.shape[1]) if tm[b, p, 0]]
        ce = [p for p in range(ids.shape[1] - 1) if labels[b, p + 1] != -100]  # position p predicts label p + 1
        # every KD entry the trainer uses names the token that follows its position (top-1 = the answer's
        # token); the one at the closing <|end|> (no next token) repeats <|end|>
        assert kd and kd[-1] == last and int(ids[b, last]) == tok.eos_token_id, (b, kd, last)
        assert [int(tt[b, p, 0]) for p in kd[:-1]] == [int(ids[b, p + 1]) for p in kd[:-1]], (b, kd)
        assert int(tt[b, last, 0]) == tok.eos_token_id
        # and covers the positions the cross-entropy trains, but the answer's first token (Axolotl masks
        # entry p by the label of token p)
        assert set(ce) - set(kd) == {ce[0]} and set(kd) - set(ce) == {last}, (b, ce, kd)
