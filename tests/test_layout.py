"""The repository's layout rules (docs/architecture.md): checked here so they cannot drift."""

from __future__ import annotations

import ast
import tomllib

from tests.support import ROOT

TESTS = ROOT / "tests"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_test_helpers_are_imported_by_their_full_name_and_never_from_a_conftest():
    helpers = {p.stem for p in TESTS.rglob("*.py") if not p.name.startswith("test_") and p.name != "__init__.py"}
    helpers |= {p.parent.name for p in TESTS.rglob("__init__.py")}
    bad = []
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if parts[0] in helpers or "conftest" in parts or (isinstance(node, ast.ImportFrom) and node.level):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name or '.'}")
    assert not bad, "import test helpers as `from tests.<dir>.<module> import ...`, never from a conftest:\n" + "\n".join(bad)


def test_declared_markers_are_used():
    declared = [m.split(":")[0].strip() for m in _pyproject()["tool"]["pytest"]["ini_options"]["markers"]]
    text = "\n".join(p.read_text(encoding="utf-8") for p in TESTS.rglob("*.py"))
    unused = [m for m in declared if f"pytest.mark.{m}" not in text]
    assert not unused, f"markers declared in pyproject.toml but never used: {unused}"


def test_import_contracts_cover_every_module():
    contracts = _pyproject()["tool"]["importlinter"]["contracts"]
    layers = [c for c in contracts if c["type"] == "layers"]
    assert layers and all(c.get("exhaustive") is True and c.get("containers") == ["distillflow"] for c in layers)
    # forbidden contracts start from the whole package: a new module is covered without an edit
    for c in contracts:
        if c["type"] == "forbidden":
            assert c["source_modules"] == ["distillflow"], c["name"]


def test_the_demo_lives_outside_the_installed_package():
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]["distillflow"]
    assert not any("demo" in p for p in package_data)
    assert not list((ROOT / "distillflow").rglob("*.safetensors"))
    assert (ROOT / "examples" / "quickstart" / "models" / "teacher" / "model.safetensors").is_file()
