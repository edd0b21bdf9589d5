"""CLI with a teacher on several replicas: preflight names the down ones, validate the bad lists."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from distillflow.cli import app
from tests.support import pipeline_yaml

runner = CliRunner()
STEPS = "  - kind: generate\n"


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()
    return url


def test_preflight_checks_every_replica(endpoint, write_yaml):
    dead = _dead_url()
    p = write_yaml(pipeline_yaml(f"[{endpoint.base_url}, {dead}]", STEPS))
    r = runner.invoke(app, ["preflight", str(p)], terminal_width=400)
    assert r.exit_code == 1, r.output
    assert "FAIL teacher teacher: 1 of 2 replicas down — DOWN " + dead in r.output
    assert "Up: " + endpoint.base_url in r.output and "Traceback" not in r.output
    p = write_yaml(pipeline_yaml(f"[{endpoint.base_url}]", STEPS), name="one.yaml")
    r = runner.invoke(app, ["preflight", str(p)], terminal_width=400)
    assert r.exit_code == 0 and f"{endpoint.base_url} reachable, model 'fake-teacher' listed" in r.output


def test_validate_rejects_a_repeated_replica(write_yaml):
    url = "http://127.0.0.1:8000/v1"
    p = write_yaml(pipeline_yaml(f"[{url}, {url}/]", STEPS))
    r = runner.invoke(app, ["validate", str(p)], terminal_width=400)
    assert r.exit_code == 2
    assert f"teachers[0].base_url (line 13): base_url lists {url}/ twice — each replica must be a different endpoint" in r.output
    assert "Traceback" not in r.output
