"""The offline demo's arithmetic task, its character tokenizer, and random tiny students for tests.

The quickstart distils a *real* skill without any hub: a ~1M-parameter teacher
(``examples/quickstart/models/teacher/``, trained by ``examples/quickstart/train_teacher.py``) answers
2-digit additions (both operands 10..99). The conversation format is::

    user:      What is 35+47?
    assistant: 82

rendered by the chat template as ``<|user|>What is 35+47?<|end|><|assistant|>82<|end|>``.

The demo's student base (``examples/quickstart/models/student/``, ``examples/quickstart/train_student.py``)
has the same tokenizer and format, half the teacher's size, and was pretrained on subtraction
only; :func:`build_demo_student` builds untrained (random) students for tests.

The answer is written in normal (human-readable) order: no digit reversal anywhere, so a
verifier compares ``response.strip()`` with ``str(a + b)``.

Problems are split once and for all by :func:`is_heldout` (a fixed arithmetic hash of the two
operands): the teacher never trains on a held-out problem; the demo prompts
(``examples/quickstart/data/arithmetic_prompts.jsonl``) and the teacher's accuracy report are drawn
from the held-out problems only.

Everything heavy (``tokenizers``, ``transformers``, ``torch``) is imported inside functions.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "OPERAND_RANGE",
    "is_heldout",
    "format_question",
    "parse_question",
    "check_answer",
    "sample_problems",
    "build_char_tokenizer",
    "build_demo_student",
    "demo_teacher_path",
    "llama_config_kwargs",
]

#: Special tokens, in id order (ids 0..5). ``<|end|>`` closes every turn and is the EOS.
SPECIAL_TOKENS = ["<|pad|>", "<|unk|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
PAD, UNK, BOS, EOS = "<|pad|>", "<|unk|>", "<|bos|>", "<|end|>"

#: Every character the tokenizer knows: printable ASCII plus newline and tab.
CHARACTERS = [c for c in string.printable if c not in "\r\x0b\x0c"]

#: Compact chat template: ``<|role|>content<|end|>`` per turn, ``<|assistant|>`` as generation
#: prompt. The assistant content sits inside ``{% generation %}`` so that
#: ``apply_chat_template(..., return_assistant_tokens_mask=True)`` (and trainers that rely on it)
#: can mask everything but the assistant's answer. Unknown roles render as ``user``.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{%- elif message['role'] == 'system' -%}"
    "<|system|>{{ message['content'] }}<|end|>"
    "{%- else -%}"
    "<|user|>{{ message['content'] }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

#: Both operands are drawn from this inclusive range (2-digit numbers: 8,100 problems).
OPERAND_RANGE = (10, 99)
#: Share (percent) of the problems held out from the teacher's training (~1,200 problems).
HELDOUT_PERCENT = 15

_QUESTION_RE = re.compile(r"^\s*(?:What is\s+)?(\d+)\s*\+\s*(\d+)\s*(?:\?|=)?\s*$")


def is_heldout(a: int, b: int) -> bool:
    """True for the ~15% of problems reserved for prompts and evaluation (never trained on).

    A pseudo-random split (a hash of ``"a+b"``), so the held-out problems have no structure the
    training problems lack.
    """
    digest = hashlib.sha1(f"{a}+{b}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELDOUT_PERCENT


def format_question(a: int, b: int) -> str:
    """The user message for ``a + b`` (``What is 35+47?``)."""
    return f"What is {a}+{b}?"


def parse_question(text: str) -> tuple[int, int] | None:
    """``(a, b)`` from ``What is 35+47?`` / ``35+47=`` / ``35 + 47``; None otherwise."""
    m = _QUESTION_RE.match(text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_answer(question: str, response: str) -> bool:
    """Programmatic verifier: does ``response`` state the exact sum asked in ``question``?"""
    ab = parse_question(question)
    if ab is None:
        return False
    return (response or "").strip() == str(ab[0] + ab[1])


def sample_problems(n: int, seed: int, *, heldout: bool) -> list[tuple[int, int]]:
    """``n`` distinct problems from the held-out (or the training) split, deterministic in seed."""
    lo, hi = OPERAND_RANGE
    available = sum(is_heldout(a, b) == heldout for a in range(lo, hi + 1) for b in range(lo, hi + 1))
    if n > available:
        split = "held-out" if heldout else "training"
        raise ValueError(f"asked for {n} distinct problems, the {split} split has only {available}")
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    while len(out) < n:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if is_heldout(a, b) != heldout or (a, b) in seen:
            continue
        seen.add((a, b))
        out.append((a, b))
    return out


def iter_training_problems(seed: int) -> Iterator[tuple[int, int]]:
    """Endless stream of training-split problems (never held out)."""
    rng = random.Random(seed)
    lo, hi = OPERAND_RANGE
    while True:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if not is_heldout(a, b):
            yield a, b


def build_char_tokenizer() -> Any:
    """A character-level ``PreTrainedTokenizerFast`` with the compact chat template.

    ``tokenizers`` ``WordLevel`` over single characters, a ``Split`` pre-tokenizer that isolates
    every character, and a ``Fuse`` decoder, so ``decode(encode(text), skip_special_tokens=True)``
    gives back ``text`` exactly for printable ASCII, newlines and tabs (other characters map to
    ``<|unk|>``).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"(?m)."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=SPECIAL_TOKENS[4:],
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def llama_config_kwargs(tokenizer: Any, *, layers: int, hidden: int, heads: int | None = None) -> dict:
    """``LlamaConfig`` keyword arguments for a tiny character-level model."""
    heads = heads or max(1, hidden // 32)
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
    )


def save_model_dir(model: Any, tokenizer: Any, path: Path, *, max_new_tokens: int = 8) -> None:
    """``save_pretrained`` model + tokenizer + a generation config that stops at ``<|end|>``.

    The generation config samples (``do_sample: true``, plain temperature 1.0, no top-k), like
    published chat models: ``transformers serve`` only honours a request's ``temperature`` when
    the model samples by default (it turns sampling *off* for ``temperature: 0``). Pass
    ``do_sample=False`` to ``generate`` for greedy decoding.
    """
    from transformers import GenerationConfig

    path.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
    )
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def build_demo_student(path: str | Path, layers: int = 2, hidden: int = 64, seed: int = 0) -> Path:
    """An untrained student: the teacher's character tokenizer and a random tiny Llama.

    Idempotent: a directory that already holds a model built with the same arguments is kept.
    """
    path = Path(path)
    marker = path / "distillflow_build.json"
    params = {"kind": "demo_student", "layers": layers, "hidden": hidden, "seed": seed}
    if marker.is_file() and (path / "config.json").is_file():
        try:
            if json.loads(marker.read_text()) == params:
                return path
        except ValueError:
            pass

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_char_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(**llama_config_kwargs(tokenizer, layers=layers, hidden=hidden))
    model = LlamaForCausalLM(config)
    save_model_dir(model, tokenizer, path, max_new_tokens=16)
    marker.write_text(json.dumps(params))
    return path


def demo_teacher_path() -> Path:
    """Where the committed demo teacher lives (``examples/quickstart/models/teacher``)."""
    return Path(__file__).resolve().parent / "models" / "teacher"
