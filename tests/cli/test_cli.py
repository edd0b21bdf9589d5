"""CLI commands and exit codes: 0 ok, 2 invalid pipeline/usage, 1 runtime failure."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tests.support import pipeline_yaml
from distillflow.cli import app

runner = CliRunner()
STEPS = "  - kind: generate\n  - {kind: filter, where: 'len(response) > 3'}\n"


def test_init_writes_a_starter_that_validates(tmp_path):
    p = tmp_path / "starter.yaml"
    r = runner.invoke(app, ["init", str(p)])
    assert r.exit_code == 0 and p.exists()
    assert "api_key_env: OPENAI_API_KEY" in p.read_text()
    r = runner.invoke(app, ["validate", str(p)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["init", str(p)])
    assert r.exit_code == 2 and "--force" in r.output


def test_graph_prints_mermaid(endpoint, write_yaml):
    p = write_yaml(pipeline_yaml(endpoint.base_url, STEPS))
    r = runner.invoke(app, ["graph", str(p)])
    assert r.exit_code == 0
    assert "flowchart LR" in r.output and "generate --> filter" in r.output and "source --> generate" in r.output


def test_preflight_reports_missing_env_var(endpoint, write_yaml, monkeypatch):
    monkeypatch.delenv("DF_TEST_KEY", raising=False)
    p = write_yaml(pipeline_yaml(endpoint.base_url, STEPS).replace("model: fake-teacher", "model: fake-teacher\n    api_key_env: DF_TEST_KEY"))
    r = runner.invoke(app, ["preflight", str(p)])
    assert r.exit_code == 1 and "DF_TEST_KEY is not set" in r.output
    r = runner.invoke(app, ["run", str(p), "--no-progress"])
    assert r.exit_code == 1 and "DF_TEST_KEY" in r.output and "Traceback" not in r.output
    monkeypatch.setenv("DF_TEST_KEY", "secret-value-123")
    r = runner.invoke(app, ["preflight", str(p)])
    assert r.exit_code == 0 and "model 'fake-teacher' listed" in r.output


def test_preflight_unknown_model_and_unreachable_endpoint(endpoint, write_yaml):
    p = write_yaml(pipeline_yaml(endpoint.base_url, STEPS).replace("model: fake-teacher", "model: fake-teachr"))
    r = runner.invoke(app, ["preflight", str(p)])
    assert r.exit_code == 1 and "did you mean 'fake-teacher'?" in r.output
    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS), name="dead.yaml")
    r = runner.invoke(app, ["preflight", str(p)])
    assert r.exit_code == 1 and "127.0.0.1:9" in r.output


def test_run_and_secret_never_written(endpoint, write_yaml, tmp_path, monkeypatch):
    monkeypatch.setenv("DF_TEST_KEY", "secret-value-123")
    p = write_yaml(pipeline_yaml(endpoint.base_url, STEPS).replace("model: fake-teacher", "model: fake-teacher\n    api_key_env: DF_TEST_KEY"))
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", str(p), "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "4 curated" in r.output
    assert json.loads((out / "manifest.json").read_text())["curated"] == 4
    for f in out.rglob("*"):
        if f.is_file():
            assert b"secret-value-123" not in f.read_bytes(), f


def test_run_missing_file_is_a_usage_error(tmp_path):
    r = runner.invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2 and "file not found" in r.output
