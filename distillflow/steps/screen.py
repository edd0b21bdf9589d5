"""The ``screen`` step: check what teachers send before a student learns it.

    - kind: screen
      action: reject            # or flag: keep every row, add `<id>_flags` (names of the rules that fired)
      disable: [phone, pipe_to_shell]
      patterns: {internal_host: '\\bcorp\\.internal\\b'}

Rules have names and categories (``RULES``; ``distillflow.steps.screen.describe()`` lists them):
secrets, personal data, prompt injection, dangerous code, teacher identity. ``disable`` takes rule
or category names; ``rules`` (optional) keeps only the named ones; ``patterns`` adds the user's
own regexes (category ``custom``). Row contract as in ``steps/curate.py``: kept rows get the step id
appended to ``provenance.filters_passed``; rejected rows carry ``rejected_by`` and ``reason`` (the
rules that fired, where, and a redacted excerpt: a secret is never copied into a reason).

>>> kept, rejected = screen_rows([{"response": "I am Claude, made by Anthropic."}], "screen", compile_rules())
>>> rejected[0]["reason"]
"screen: model_name_claim (teacher identity) in response at char 0: 'I am Claude'"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Callable, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from distillflow.errors import did_you_mean
from distillflow.steps.base import StepBase, StepKind
from distillflow.steps.curate import _keep

__all__ = ["ScreenStep", "Rule", "RULES", "CATEGORIES", "compile_rules", "screen_rows", "screen_text",
           "luhn_ok", "iban_ok", "describe", "category_label", "KIND"]

Rows = list[dict]

CATEGORIES = {
    "secrets": "secrets",
    "personal_data": "personal data",
    "injection": "prompt injection",
    "dangerous": "dangerous code",
    "identity": "teacher identity",
    "custom": "custom",
}


@dataclass(frozen=True)
class Rule:
    """One named check. ``find(text)`` -> (start offset, matched text) of the first hit, or None."""

    name: str
    category: str
    description: str
    find: Callable[[str], tuple[int, str] | None]
    secret: bool = False  # redact the excerpt in reasons


def _regex(pattern: str, flags: int = 0, accept: Callable[[re.Match], bool] | None = None):
    rx = re.compile(pattern, flags)

    def find(text: str):
        for m in rx.finditer(text):
            if accept is None or accept(m):
                return m.start(), m.group(0)
        return None

    return find


# --------------------------------------------------------------------------- checks with arithmetic

def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only): ``luhn_ok("4539578763621486") is True``."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match) -> bool:
    digits = re.sub(r"[ -]", "", m.group(0))
    if not 13 <= len(digits) <= 19 or len(set(digits)) < 3:
        return False
    # issuer prefixes: Visa 4, Mastercard 51-55/22-27, Amex 34/37, Discover/UnionPay 6, Diners 30/36/38, JCB 35
    if not re.match(r"4|5[1-5]|2[2-7]|3[0478]|35|6", digits):
        return False
    return luhn_ok(digits)


_IBAN_LENGTHS = {  # ISO 13616 registry, the countries most often seen
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20,
    "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25,
    "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26, "AE": 23, "SA": 24, "IL": 23, "BR": 29,
}


def iban_ok(iban: str) -> bool:
    """ISO 7064 mod-97 check (and the country's length when known): ``iban_ok("GB82WEST12345698765432")``."""
    s = re.sub(r"\s", "", iban).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", s):
        return False
    if _IBAN_LENGTHS.get(s[:2], len(s)) != len(s):
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


_PLACEHOLDER_PASSWORD = re.compile(
    r"(?:<[^>]*>|\$\{?\w+\}?|\{\{?\s*\w+\s*\}?\}|%\(?\w+\)?s?|\*+|x+|\.\.\.|password|passwd|pass|pwd|secret|"
    r"changeme|your[_-]?password|mypassword|pw|p@ssw0rd)",
    re.I,
)


def _real_password(m: re.Match) -> bool:
    return not _PLACEHOLDER_PASSWORD.fullmatch(m.group("pw"))


_EXAMPLE_DOMAIN = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net)|example|test|invalid|localhost)$", re.I)


def _real_email(m: re.Match) -> bool:
    return not _EXAMPLE_DOMAIN.search(m.group("domain"))


def _phone(m: re.Match) -> bool:
    digits = re.sub(r"\D", "", m.group(0))
    return 10 <= len(digits) <= 15


_IMPERATIVE = re.compile(
    r"\b(?:ignore|disregard|instruction|instructions|system prompt|assistant|you must|you are|do not (?:tell|reveal|mention)|"
    r"respond|reply|execute|run this|override|pretend)\b",
    re.I,
)


def _hidden_instruction(m: re.Match) -> bool:
    return bool(_IMPERATIVE.search(m.group("body")))


# --------------------------------------------------------------------------- the rules

_PROVIDERS = r"(?:OpenAI|Anthropic|Google(?: DeepMind)?|DeepMind|Meta(?: AI)?|Mistral(?: AI)?|DeepSeek|Alibaba(?: Cloud)?|Microsoft|xAI|Cohere)"
_MODELS = r"(?:Claude|ChatGPT|GPT-?[3-9](?:\.\d)?(?:o|-turbo)?|Gemini|Bard|LLaMA|Llama|Qwen|DeepSeek|Mistral|Grok|Copilot)"
_ZERO_WIDTH = (
    "[\u200b\u2060\u180e\ufeff\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]"  # ZW space, joiner-free marks, bidi, tags
    "|(?<![\U0001f000-\U0001faff\u2600-\u27bf\ufe0f])\u200d"  # ZW joiner outside emoji sequences
    "|(?<![\u0600-\u06ff\u0900-\u0dff])\u200c"  # ZW non-joiner outside Arabic/Persian and Indic scripts
)

_SPECS: list[tuple[str, str, str, str, int, Callable | None, bool]] = [
    # name, category, description, pattern, flags, accept, secret
    ("openai_key", "secrets", "OpenAI API key (sk-..., sk-proj-...)",
     r"\bsk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}", 0, None, True),
    ("anthropic_key", "secrets", "Anthropic API key (sk-ant-...)", r"\bsk-ant-[A-Za-z0-9]{2,8}-[A-Za-z0-9_-]{32,}", 0, None, True),
    ("aws_key", "secrets", "AWS access key id (AKIA/ASIA...)", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", 0, None, True),
    ("github_token", "secrets", "GitHub token (ghp_, gho_, github_pat_...)",
     r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})", 0, None, True),
    ("google_api_key", "secrets", "Google API key (AIza...)", r"\bAIza[0-9A-Za-z_-]{35}", 0, None, True),
    ("slack_token", "secrets", "Slack token (xoxb-, xoxp-...)", r"\bxox[abposr]-\d+-[A-Za-z0-9-]{10,}", 0, None, True),
    ("huggingface_token", "secrets", "Hugging Face token (hf_...)", r"\bhf_[A-Za-z0-9]{34,}", 0, None, True),
    ("stripe_key", "secrets", "Stripe live key (sk_live_, rk_live_)", r"\b[rs]k_live_[A-Za-z0-9]{20,}", 0, None, True),
    ("private_key", "secrets", "private key block (-----BEGIN ... PRIVATE KEY-----)",
     r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----", 0, None, True),
    ("url_password", "secrets", "password in a URL (scheme://user:password@host), placeholders excepted",
     r"\b[a-z][a-z0-9+.-]{1,15}://[^\s/:@]+:(?P<pw>[^\s/@]+)@[\w.-]+", re.I, _real_password, True),
    ("email", "personal_data", "email address (example.com, .test, .invalid, localhost excepted)",
     r"\b[A-Za-z0-9._%+-]+@(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b", 0, _real_email, False),
    ("phone", "personal_data", "phone number (+international, or (123) 456-7890 shapes; 10-15 digits)",
     r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){2,4}|\(\d{3}\) ?\d{3}[ .-]\d{4}|"
     r"\d{3}[.-]\d{3}[.-]\d{4})(?![\w.-]*\d)", 0, _phone, False),
    ("card_number", "personal_data", "payment card number (issuer prefix + Luhn check)",
     r"(?<![\d.-])(?:\d[ -]?){12,18}\d(?![\d.-]?\d)", 0, _card, True),
    ("iban", "personal_data", "IBAN (country length + mod-97 check)",
     r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", 0, lambda m: iban_ok(m.group(0)), True),
    ("ignore_instructions", "injection", "'ignore previous instructions' and its variants",
     r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|everything\s+)?(?:of\s+)?(?:the\s+|your\s+|my\s+)?"
     r"(?:previous|prior|above|earlier|preceding|original|system)\s+(?:instructions?|prompts?|directions|rules|guidelines|messages)",
     re.I, None, False),
    ("jailbreak_persona", "injection", "jailbreak role-play (DAN, developer mode, 'you have no restrictions')",
     r"\b(?:DAN|Do Anything Now)\b.{0,80}\b(?:mode|prompt|jailbreak|anything)\b|\bdeveloper mode (?:enabled|activated|on)\b|"
     r"\byou are (?:now )?(?:an? )?(?:unrestricted|unfiltered|uncensored|jailbroken)\b|"
     r"\b(?:pretend|imagine) (?:that )?you (?:have|had) no (?:restrictions|rules|guidelines|filters)\b|\bjailbreak(?:ed)? mode\b",
     re.I, None, False),
    ("system_prompt_markup", "injection", "chat-template control tokens or a fake system turn (<|im_start|>system, [INST], <<SYS>>)",
     r"<\|(?:im_start|im_end|system|start_header_id|end_header_id|eot_id|endoftext)\|>|\[/?INST\]|<</?SYS>>|"
     r"^\s*#{0,3}\s*(?i:system (?:prompt|message|override))\s*:", re.M, None, False),
    ("hidden_instruction", "injection", "instructions hidden in HTML/markdown comments",
     r"<!--(?P<body>.*?)-->|^\[(?://|comment)\]: *(?:#|<>) *(?P<body2>.*)$", re.S | re.M,
     lambda m: bool(_IMPERATIVE.search(m.group("body") or m.group("body2") or "")), False),
    ("zero_width", "injection", "zero-width, bidi-override or tag characters (emoji joiners and Persian/Indic ZWNJ excepted)",
     _ZERO_WIDTH, 0, None, False),
    ("pipe_to_shell", "dangerous", "download piped into a shell (curl ... | sh)",
     r"\b(?:curl|wget|fetch|iwr|Invoke-WebRequest)\b[^\n|;]*\|\s*(?:sudo\s+(?:-\w+\s+)*)?(?:ba|z|k|da|fi)?sh\b|"
     r"\b(?:iex|Invoke-Expression)\s*\(?\s*(?:\(?\s*New-Object\s+Net\.WebClient|iwr|Invoke-WebRequest)", re.I, None, False),
    ("rm_rf_root", "dangerous", "recursive delete of / or the home directory",
     r"\brm\s+(?:-[a-zA-Z]+\s+|--no-preserve-root\s+)*-[a-zA-Z]*(?:r[a-zA-Z]*f|f[a-zA-Z]*r|R)[a-zA-Z]*\s+"
     r"(?:--no-preserve-root\s+)?(?:/\*?|~/?\*?|\$HOME/?\*?)(?=\s|$|[;&|'\"`)])", 0, None, False),
    ("base64_exec", "dangerous", "base64-decoded payload executed (base64 -d | sh, exec(b64decode(...)), -EncodedCommand)",
     r"base64\s+(?:-d|--decode|-D)\b[^\n|]*\|\s*(?:sudo\s+)?(?:ba|z)?sh\b|"
     r"\b(?:exec|eval)\s*\(\s*(?:__import__\(['\"]base64['\"]\)|base64)\.b64decode|"
     r"\beval\s*\(\s*(?:atob|Buffer\.from)\s*\(|\bpowershell(?:\.exe)?\b[^\n]*\s-(?:e|enc|EncodedCommand)\s+[A-Za-z0-9+/=]{16,}",
     re.I, None, False),
    ("reverse_shell", "dangerous", "reverse shell (/dev/tcp, nc -e, socket + dup2 + shell)",
     r"/dev/tcp/[\w.-]+/\d+|\b(?:nc|ncat|netcat)\b[^\n]*\s-e\s+/bin/(?:ba)?sh|mkfifo\s+\S+[^\n]*\|\s*(?:nc|ncat)\b|"
     r"socket\.socket\([^\n]*\n?[^\n]*\.connect\(\([^\n]*os\.dup2|pty\.spawn\(\s*['\"]/bin/(?:ba)?sh",
     0, None, False),
    ("ai_developer_claim", "identity", "'As an AI developed by OpenAI', 'I was trained by Anthropic'",
     r"\b(?:as an? (?:AI|artificial intelligence|(?:large )?language model|LLM|assistant)(?: model| assistant)?,?|"
     r"I(?:'m| am| was)(?: an? (?:AI|large language model|language model|assistant|model)(?: model| assistant)?)?)"
     r"\s+(?:developed|created|made|trained|built|designed)\s+by\s+" + _PROVIDERS + r"\b", re.I, None, False),
    ("model_name_claim", "identity", "'I am Claude', 'my name is ChatGPT'",
     r"\b(?i:I(?:'m| am)|my name is|you(?:'re| are) (?:talking|chatting|speaking) (?:to|with))\s+" + _MODELS + r"\b",
     0, None, False),
]

RULES: dict[str, Rule] = {
    name: Rule(name, cat, desc, _regex(pattern, flags, accept), secret)
    for name, cat, desc, pattern, flags, accept, secret in _SPECS
}


def category_label(category: str) -> str:
    """A category as tables show it: the name YAML takes, then the display name when it differs.

    >>> category_label("injection")
    '`injection` (prompt injection)'
    """
    shown = CATEGORIES[category]
    return f"`{category}`" + (f" ({shown})" if shown != category else "")


def describe() -> str:
    """The rule table (name, category, what it matches), as printed in the README."""
    rows = ["| rule | category | matches |", "| --- | --- | --- |"]
    rows += [f"| `{r.name}` | {category_label(r.category)} | {r.description} |" for r in RULES.values()]
    return "\n".join(rows)


# --------------------------------------------------------------------------- spec

def _known_name(name: str) -> str:
    # Checked per item (not per list) so that every unknown name is its own problem, each with
    # its did-you-mean and location, and `validate` reports them all at once.
    known = [*RULES, *(c for c in CATEGORIES if c != "custom")]
    if name not in known:
        hint = did_you_mean(name, known)
        raise ValueError(f"unknown screen rule or category '{name}'" + (f" — {hint}" if hint else f" (known: {', '.join(known)})"))
    return name


_RuleName = Annotated[str, AfterValidator(_known_name)]


class ScreenStep(StepBase):
    """Check answers for secrets, personal data, injections, dangerous code and teacher identity."""

    kind: Literal["screen"]
    columns: list[str] = Field(default_factory=lambda: ["response"], min_length=1, description="Text columns checked.")
    action: Literal["reject", "flag"] = Field(
        "reject", description="reject: the row goes to `rejected` naming the rules; flag: kept, rules listed in `<id>_flags`."
    )
    rules: list[_RuleName] | None = Field(None, description="Only these rules or categories (default: all).")
    disable: list[_RuleName] = Field(default_factory=list, description="Rules or categories switched off, e.g. [phone, dangerous].")
    patterns: dict[str, str] = Field(default_factory=dict, description="Your own rules: {name: regex} (category custom).")
    ignore_case: bool = Field(False, description="Match your `patterns` case-insensitively.")

    @field_validator("patterns")
    @classmethod
    def _compilable(cls, patterns):
        for name, rx in patterns.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"pattern name '{name}' must be an identifier (letters, digits, _)")
            if name in RULES:
                raise ValueError(f"pattern name '{name}' is a built-in rule: choose another name")
            try:
                re.compile(rx)
            except re.error as e:
                raise ValueError(f"pattern '{name}' is not a valid regex: {e}") from None
        return patterns

    @model_validator(mode="after")
    def _something_left(self):
        if not compile_rules(self):
            raise ValueError("every screen rule is switched off: remove some names from `disable` or add `patterns`")
        return self


# --------------------------------------------------------------------------- pure functions

def compile_rules(step: ScreenStep | None = None) -> list[Rule]:
    """The rules a step applies, in table order, user patterns last (all built-ins when step is None)."""
    if step is None:
        return list(RULES.values())
    wanted = set(step.rules) if step.rules is not None else None
    off = set(step.disable)
    out = [r for r in RULES.values()
           if (wanted is None or r.name in wanted or r.category in wanted) and r.name not in off and r.category not in off]
    flags = re.I if step.ignore_case else 0
    out += [Rule(name, "custom", f"your pattern {rx!r}", _regex(rx, flags)) for name, rx in step.patterns.items()]
    return out


def _excerpt(rule: Rule, hit: str) -> str:
    hit = hit.replace("\n", " ")
    if rule.secret:
        return repr(hit[:4] + "…") if len(hit) > 4 else "'…'"
    return repr(hit if len(hit) <= 40 else hit[:37] + "...")


def screen_text(text: str, rules: list[Rule]) -> list[tuple[Rule, int, str]]:
    """Every rule that fires on ``text``: (rule, offset, matched text), in rule order."""
    hits = []
    for rule in rules:
        found = rule.find(text)
        if found is not None:
            hits.append((rule, *found))
    return hits


def screen_rows(rows: Rows, step_id: str, rules: list[Rule], columns=("response",), action: str = "reject") -> tuple[Rows, Rows]:
    """Apply ``rules`` to ``columns`` of each row: (kept, rejected), input order, rows never mutated.

    ``action="flag"`` keeps every row and sets ``<step_id>_flags`` (rule names, sorted by table
    order, no repeats; ``[]`` when clean). A missing or None column counts as empty text.
    """
    if action not in ("reject", "flag"):
        raise ValueError(f"action must be 'reject' or 'flag', not {action!r}")
    flag_col = f"{step_id}_flags"
    kept, rejected = [], []
    for row in rows:
        found: list[tuple[Rule, str, int, str]] = []
        for col in columns:
            value = row.get(col)
            text = value if isinstance(value, str) else ("" if value is None else str(value))
            found += [(rule, col, at, hit) for rule, at, hit in screen_text(text, rules)]
        if action == "flag":
            names = list(dict.fromkeys(rule.name for rule, *_ in found))
            kept.append(_keep({**row, flag_col: names}, step_id))
        elif found:
            reason = "; ".join(
                f"{rule.name} ({CATEGORIES[rule.category]}) in {col} at char {at}: {_excerpt(rule, hit)}"
                for rule, col, at, hit in found
            )
            rejected.append({**row, "rejected_by": step_id, "reason": f"screen: {reason}"})
        else:
            kept.append(_keep(row, step_id))
    return kept, rejected




# --------------------------------------------------------------------------- the kind

def _prepare(ctx, step: ScreenStep) -> list[Rule]:
    return compile_rules(step)


def _run(ctx, step: ScreenStep, rows: Rows, state) -> tuple[Rows, Rows]:
    rules = state if state is not None else compile_rules(step)
    return screen_rows(rows, step.id or "screen", rules, step.columns, step.action)


def _columns(step: ScreenStep) -> tuple[set[str], set[str]]:
    return set(step.columns), ({f"{step.id or 'screen'}_flags"} if step.action == "flag" else set())


KIND = StepKind(
    name="screen", spec=ScreenStep, run=_run, columns=_columns, scope="row", prepare=_prepare, builder="Screen",
    doc="Screen answers for secrets, personal data, prompt injection, dangerous code and teacher identity leaks.",
)
