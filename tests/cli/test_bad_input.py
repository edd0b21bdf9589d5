"""Bad input a newcomer types: one clear line naming the cause and the fix, exit 2 (1 when the
input is valid but cannot run here), and never a traceback."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from distillflow.cli import app
from tests.support import need_binary, pipeline_yaml

runner = CliRunner()
STEPS = "  - kind: generate\n  - {kind: filter, where: 'len(response) > 3'}\n"


def _cli(*args: str, code: int) -> str:
    """Run the CLI; check the exit code and that no exception escaped (a traceback); return its output."""
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    return r.output


@pytest.fixture
def pipeline(write_yaml):
    return write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS))


# ---------------------------------------------------------------- graph -o


@pytest.mark.parametrize("name", ["dag.txt", "dag.html", "dag.bmpx"])
def test_graph_refuses_an_extension_it_cannot_write(pipeline, tmp_path, name):
    out = _cli("graph", pipeline, "-o", tmp_path / name, code=2)
    assert f"cannot write a graph as '{name[3:]}'" in out
    for ext in (".mmd", ".svg", ".png", ".pdf"):
        assert ext in out
    assert not (tmp_path / name).exists()


def test_graph_accepts_extensions_in_any_case_and_pdf(pipeline, tmp_path):
    need_binary("dot", "apt-get install -y graphviz")
    _cli("graph", pipeline, "-o", tmp_path / "DAG.SVG", code=0)
    assert "<svg" in (tmp_path / "DAG.SVG").read_text()
    _cli("graph", pipeline, "-o", tmp_path / "dag.pdf", code=0)
    assert (tmp_path / "dag.pdf").read_bytes().startswith(b"%PDF")
    _cli("graph", pipeline, "-o", tmp_path / "DAG.MMD", code=0)
    assert "flowchart LR" in (tmp_path / "DAG.MMD").read_text()


def test_graph_writes_graphviz_source_and_the_other_formats_dot_draws(pipeline, tmp_path):
    need_binary("dot", "apt-get install -y graphviz")
    _cli("graph", pipeline, "-o", tmp_path / "dag.dot", code=0)
    assert (tmp_path / "dag.dot").read_text().startswith("digraph")
    _cli("graph", pipeline, "-o", tmp_path / "dag.jpg", code=0)
    assert (tmp_path / "dag.jpg").read_bytes()[:2] == b"\xff\xd8"
    _cli("graph", pipeline, "-o", tmp_path / "dag.json", code=0)
    assert '"directed": true' in (tmp_path / "dag.json").read_text()


def test_graph_creates_a_missing_output_folder_as_run_and_report_do(pipeline, tmp_path):
    _cli("graph", pipeline, "-o", tmp_path / "nodir" / "dag.mmd", code=0)
    assert "flowchart LR" in (tmp_path / "nodir" / "dag.mmd").read_text()
    if shutil.which("dot"):
        _cli("graph", pipeline, "-o", tmp_path / "other" / "sub" / "dag.svg", code=0)
        assert "<svg" in (tmp_path / "other" / "sub" / "dag.svg").read_text()
    out = _cli("graph", pipeline, "-o", pipeline / "dag.mmd", code=2)  # a file where the folder must be
    assert f"{pipeline} is a file, not a folder" in out


def test_a_dot_failure_is_a_message_with_its_stderr(pipeline, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text("#!/bin/sh\necho 'Format: \"png\" not recognized. Use one of: svg' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    out = _cli("graph", pipeline, "-o", tmp_path / "dag.png", code=1)
    assert "dot -Tpng" in out and 'Format: "png" not recognized' in out and "error:" in out


# ---------------------------------------------------------------- init


def test_init_creates_a_missing_folder_and_refuses_a_directory(tmp_path):
    _cli("init", tmp_path / "nodir" / "p.yaml", code=0)
    assert "api_key_env" in (tmp_path / "nodir" / "p.yaml").read_text()
    adir = tmp_path / "adir"
    adir.mkdir()
    for extra in ([], ["--force"]):
        out = _cli("init", adir, *extra, code=2)
        assert "is a directory" in out and str(adir / "pipeline.yaml") in out
    out = _cli("init", tmp_path / "nodir" / "p.yaml" / "q.yaml", code=2)
    assert "p.yaml is a file, not a folder" in out


# ---------------------------------------------------------------- eval options


def test_eval_names_a_bad_option_its_value_and_the_allowed_ones(pipeline, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(pipeline, run / "pipeline.yaml")
    out = _cli("eval", run, "--metric", "bogus", code=2)
    assert "--metric: unknown value 'bogus'" in out
    assert "verifier, exact_match, judge, winrate" in out and "pydantic" not in out
    out = _cli("eval", run, "--metric", "judg", code=2)
    assert "did you mean 'judge'?" in out
    out = _cli("eval", run, "--backend", "srve", code=2)
    assert "--backend: unknown value 'srve' — did you mean 'serve'? (allowed: local, serve)" in out
    assert "validation error" not in out and "errors.pydantic.dev" not in out


# ---------------------------------------------------------------- RUN_DIR arguments

RUN_DIR_COMMANDS = [["train"], ["eval"], ["report"], ["review", "push"], ["review", "pull"], ["status"]]


@pytest.mark.parametrize("cmd", RUN_DIR_COMMANDS, ids=" ".join)
def test_a_file_given_as_run_dir_is_called_a_file_not_a_missing_dir(cmd, pipeline, tmp_path):
    out = _cli(*cmd, pipeline, code=2)
    assert f"{pipeline} is a pipeline file, not a distillflow run directory" in out and "not found" not in out
    assert f"distillflow run {pipeline} --out RUN_DIR" in out
    assert ("--config" in out) == (cmd[0] in ("train", "eval"))  # only they take --config
    (tmp_path / "notes.txt").write_text("x")
    out = _cli(*cmd, tmp_path / "notes.txt", code=2)
    assert "notes.txt is a file, not a distillflow run directory" in out


@pytest.mark.parametrize("cmd", [["review", "push"], ["review", "pull"]], ids=" ".join)
def test_review_exits_2_for_a_bad_run_dir_as_train_eval_and_report_do(cmd, tmp_path):
    out = _cli(*cmd, tmp_path / "nope", code=2)
    assert "nope is not a distillflow run directory (not found)" in out
    out = _cli(*cmd, tmp_path, code=2)  # a folder without pipeline.yaml
    assert "is not a distillflow run directory (no pipeline.yaml)" in out


def test_status_refuses_a_folder_that_is_no_run_as_eval_and_report_do(tmp_path):
    out = _cli("status", tmp_path, code=2)
    assert f"{tmp_path} is not a distillflow run directory (no " in out
    assert f"run `distillflow run PIPELINE.yaml --out {tmp_path}` first" in out
    assert "no provider batches" not in out


@pytest.mark.parametrize("cmd", RUN_DIR_COMMANDS, ids=" ".join)
def test_every_run_dir_command_words_a_missing_or_empty_dir_the_same(cmd, tmp_path):
    out = _cli(*cmd, tmp_path / "nope", code=2)
    assert "nope is not a distillflow run directory (not found)" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _cli(*cmd, empty, code=2)
    assert f"{empty} is not a distillflow run directory (no " in out
    assert f"run `distillflow run PIPELINE.yaml --out {empty}` first" in out


def test_status_still_shows_a_run_without_batches(tmp_path):
    run = tmp_path / "run"
    (run / "cache").mkdir(parents=True)  # a run makes cache/ as it starts
    out = _cli("status", run, code=0)
    assert "no provider batches" in out
