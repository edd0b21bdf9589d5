"""`distillflow status RUN_DIR` shows the run's provider batches from its BatchStore."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner

from benchmarks.fake_batch_server import BatchServerThread
from distillflow.cli import app
from distillflow.engine.batch import BatchStore, answer_batch, store_path
from tests.engine.batch_support import Caller, requests, teacher

runner = CliRunner()


def test_status_lists_live_and_collected_batches(tmp_path):
    run_dir = tmp_path / "run"
    with BatchServerThread() as srv:
        t = teacher(srv, "openai")
        store = BatchStore(store_path(run_dir))
        asyncio.run(answer_batch(t, requests(["a", "b", "c"]), store=store, on_result=Caller().on_result))
        srv.set(hold=True)
        asyncio.run(answer_batch(t, requests(["d", "e"]), store=store, on_result=Caller().on_result, wait=False))
        done, live = store.summary()
    r = runner.invoke(app, ["status", str(run_dir)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert done["batch_id"] in r.output and live["batch_id"] in r.output
    assert "collected" in r.output and "submitted (not polled yet)" in r.output
    assert f"{t.name}: 3 answers collected through batches, ${done['cost_usd']:.4f}" in r.output
    assert "1 batch(es) still with the provider — run the same `distillflow run` command again" in r.output


def test_status_of_a_run_without_batches_and_of_a_missing_dir(tmp_path):
    (tmp_path / "cache").mkdir()  # a run makes cache/ as it starts
    r = runner.invoke(app, ["status", str(tmp_path)])
    assert r.exit_code == 0 and "no provider batches" in r.output
    r = runner.invoke(app, ["status", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "is not a distillflow run directory (not found)" in r.output
