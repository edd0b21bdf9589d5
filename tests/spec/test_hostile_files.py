"""Any file, any path -> SpecError (exit 2) naming the cause and the fix, in bounded time and memory.

Every class is checked through the Python API (``distillflow.load``); a few through the real CLI
in a subprocess with an address-space limit, so a regression that explodes fails instead of
swapping the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest

from distillflow.api import load
from distillflow.errors import SpecError
from distillflow.spec import safe_yaml

from tests.support import ROOT

GOOD = """name: ok
source:
  kind: inline
  rows: [{prompt: "hi"}]
teachers:
  - name: t
    provider: openai
    base_url: http://127.0.0.1:9/v1
    model: m
steps:
  - kind: generate
  - kind: filter
    where: "len(response) > 2"
"""

BOMB = "".join(
    f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}" if i else '"lol"'] * 9) + "]\n" for i in range(10)
)  # 9**10 ≈ 3.5e9 strings once expanded, 600 bytes on disk


def error_of(arg) -> str:
    start = time.monotonic()
    with pytest.raises(SpecError) as info:
        load(arg)
    assert time.monotonic() - start < 5, "a hostile file must be answered in seconds"
    return str(info.value)


def _limit_memory():  # runs in the child: 3 GiB of address space is plenty for the CLI
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "distillflow", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, preexec_fn=_limit_memory,
    )


def test_good_file_and_anchors_with_merge_keys_still_load(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(GOOD.replace("  - name: t\n", "  - &teacher\n    name: t\n"))
    assert load(p).teachers[0].name == "t"
    # merge keys override a key of the anchor: that is not a duplicate
    text = GOOD.replace("steps:\n", "x-base: &base {kind: filter, where: \"len(response) > 2\"}\nsteps:\n")
    text = text.replace("  - kind: filter\n    where: \"len(response) > 2\"\n", "  - <<: *base\n    id: f2\n")
    with pytest.raises(SpecError) as info:  # x-base is an unknown top-level key, nothing else
        load(text)
    assert "unknown key 'x-base'" in str(info.value) and "twice" not in str(info.value)


def test_directory(tmp_path):
    (tmp_path / "mine.yaml").write_text(GOOD)
    msg = error_of(tmp_path)
    assert f"{tmp_path} is a directory, not a pipeline file" in msg
    assert f"e.g. {tmp_path / 'mine.yaml'}" in msg


def test_missing_file_with_any_suffix_or_none(tmp_path):
    for name in ("nope.yaml", "nope.json", "nope"):
        msg = error_of(tmp_path / name)
        assert f"file not found: {tmp_path / name}" in msg and "distillflow init" in msg
    assert "file not found: just-a-name" in error_of("just-a-name")


def test_a_file_used_as_a_folder(tmp_path):
    (tmp_path / "f.yaml").write_text(GOOD)
    assert "a part of the path is a file, not a folder" in error_of(tmp_path / "f.yaml" / "x.yaml")


def test_symlink_loop(tmp_path):
    os.symlink(tmp_path / "a.yaml", tmp_path / "b.yaml")
    os.symlink(tmp_path / "b.yaml", tmp_path / "a.yaml")
    assert "cannot open" in error_of(tmp_path / "a.yaml")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(GOOD)
    p.chmod(0)
    assert "permission denied" in error_of(p) and "chmod u+r" in error_of(p)


def test_non_utf8_file_names_the_byte_and_line(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_bytes(b"name: ok\ndescription: caf\xe9\n")
    msg = error_of(p)
    assert "not UTF-8 text (byte 0xe9 at line 2, column 17)" in msg and "iconv" in msg


def test_utf16_and_utf8_bom(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_bytes(GOOD.encode("utf-16"))
    assert "UTF-16 encoded" in error_of(p) and "save it as UTF-8" in error_of(p)
    p.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load(p).name == "ok"


def test_binary_file(tmp_path):
    p = tmp_path / "model.yaml"
    p.write_bytes(b"PK\x03\x04\x00\x00binary")
    assert "not a text file (a NUL byte at offset 4)" in error_of(p)


def test_huge_file_is_refused_before_reading(tmp_path):
    p = tmp_path / "big.yaml"
    with open(p, "wb") as fh:  # sparse: the size check must come from stat, not from reading
        fh.truncate(safe_yaml.MAX_BYTES + 1)
    msg = error_of(p)
    assert "pipeline files are limited to 10 MB" in msg and "source.kind: jsonl" in msg


def test_endless_device_is_read_only_up_to_the_limit():
    assert "larger than the limit; pipeline files are limited to 10 MB" in error_of("/dev/zero")


def test_huge_text_from_python():
    assert "limited to 10 MB" in error_of("name: x\n" + "#" * safe_yaml.MAX_BYTES)


def test_billion_laughs_answers_in_under_a_second():
    start = time.monotonic()
    with pytest.raises(SpecError) as info:
        load(BOMB)
    took = time.monotonic() - start
    assert "anchors and aliases expand to more than 100,000 nodes" in str(info.value)
    assert took < 1.0, f"took {took:.2f}s"


def test_alias_pointing_deep_counts_its_depth():
    inner = "x: " + "[" * 60 + "1" + "]" * 60
    text = f"a: &a {inner[3:]}\nb: " + "[" * 50 + "*a" + "]" * 50 + "\n"
    assert "nests deeper than 100 levels" in error_of(text)


@pytest.mark.parametrize("text", [
    "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "a: " + "{x: " * 5_000 + "1" + "}" * 5_000 + "\n",
    "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "v\n",
], ids=["flow-lists", "flow-maps", "block-maps"])
def test_deep_nesting(text):
    msg = error_of(text)
    assert "nests deeper than 100 levels" in msg and "flatten it" in msg


def test_duplicate_keys_at_every_depth_reported_together():
    text = GOOD.replace("name: ok\n", "name: ok\nname: again\n").replace(
        "    model: m\n", "    model: m\n    params: {temperature: 0.1, temperature: 0.9}\n"
    )
    msg = error_of(text)
    assert msg.startswith("2 errors in pipeline:")
    assert "<root> (line 2): key 'name' appears twice (lines 1 and 2)" in msg
    assert "teachers[0].params (line 11): key 'temperature' appears twice (line 11, columns 14 and 32)" in msg
    assert "keep only the last one silently" in msg


def test_several_documents():
    msg = error_of(GOOD + "---\nname: second\n")
    assert "more than one YAML document (another starts at line 14)" in msg and "one pipeline per file" in msg


def test_python_objects_are_never_built():
    msg = error_of("name: !!python/object/apply:os.system ['echo hi']\n")
    assert "invalid YAML" in msg and "python/object" in msg


def test_cli_exits_2_without_traceback(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    for args, expected in [
        (("validate", tmp_path), "is a directory, not a pipeline file"),
        (("validate", bomb), "an alias bomb?"),
        (("run", latin, "--no-progress"), "not UTF-8 text"),
        (("graph", bomb), "an alias bomb?"),
        (("preflight", tmp_path / "missing.yaml"), "file not found"),
    ]:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert expected in r.stderr and "Traceback" not in r.stderr, r.stderr
