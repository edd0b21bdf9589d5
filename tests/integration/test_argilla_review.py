"""The Argilla review loop against a real argilla-server 2.8.0 started by `review up`'s code.

One server for the module (osmem search engine + valkey Redis + SQLite in a temp dir, a free port).
Each test builds the state it needs (issue 15): `run_dir` is a fresh copy of one pipeline run whose
review dataset is named after the test, so tests run alone and in any order. The review loop itself
(push -> grow -> responses the way the UI sends them -> pull -> agreement -> similarity -> restart) is
one scenario test with named stages. The first run creates the server venv (minutes); later runs reuse it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.support import need_binary, need_module


ROOT = Path(__file__).resolve().parents[2]
KEY = "argilla.apikey"

# Known judge scores (1-5, threshold 4) for the six prompts: the fake endpoint does not grade.
SCORES = [5.0, 5.0, 4.0, 2.0, 1.0, 3.0]
PROMPTS = [
    ("What is 2+2?", "4"),
    ("What is 3+5?", "8"),
    ("Name the capital of France.", "Paris"),
    ("What is 10-7?", "3"),
    ("Spell cat backwards.", "tac"),
    ("What colour is the sky on a clear day?", "blue"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def argilla(tmp_path_factory):
    """A real local Argilla; ARGILLA_API_URL / ARGILLA_API_KEY point at it for the module."""
    from distillflow.review import server

    data = tmp_path_factory.mktemp("argilla-data")
    info = server.up(port=_free_port(), data_dir=data, log=lambda m: print(m, flush=True))
    mp = pytest.MonkeyPatch()
    mp.setenv("ARGILLA_API_URL", info.url)
    mp.setenv("ARGILLA_API_KEY", info.api_key)
    try:
        yield info
    finally:
        mp.undo()
        server.down(data_dir=data)


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory):
    """A curated run made by a real pipeline run over the local fake OpenAI-compatible endpoint (never modified)."""
    import distillflow as df
    from benchmarks.fake_endpoint import EndpointThread
    from distillflow.engine.outputs import read_jsonl, write_jsonl

    base = tmp_path_factory.mktemp("review-run")
    rows = "\n".join(f'    - {{question: "{q}", answer: "{a}"}}' for q, a in PROMPTS)
    with EndpointThread(latency=(0.0, 0.0)) as ep:
        (base / "pipeline.yaml").write_text(
            f"""name: qa-review
source:
  kind: inline
  system_prompt: "You are a terse tutor."
  columns: {{prompt: question, reference: answer}}
  rows:
{rows}
teachers:
  - {{name: tutor, provider: openai, base_url: "{ep.base_url}", model: fake-teacher, params: {{max_tokens: 32}}}}
steps:
  - kind: generate
  - {{kind: judge, teacher: tutor}}
  - {{kind: verify, check: contains, reference: reference}}
review:
  workspace: distillflow
  mode: required
  vectors: true
  auto_push: false   # the judge scores are set by hand below, then pushed by the tests
"""
        )
        df.run(df.load(base / "pipeline.yaml"), out=base / "run", progress=False)
    out = base / "run"
    curated = read_jsonl(out / "data" / "curated.jsonl")
    by_prompt = {r["prompt"]: r for r in curated}
    assert len(curated) == len(PROMPTS)
    for (q, _), score in zip(PROMPTS, SCORES):
        row = by_prompt[q]
        row["judge_score"], row["judge_rationale"], row["judge_status"] = score, f"judge says {score:g}", "scored"
        row["provenance"]["judges"]["judge"].update(score=score, rationale=f"judge says {score:g}")
    write_jsonl(out / "data" / "curated.jsonl", [by_prompt[q] for q, _ in PROMPTS])
    return out


@pytest.fixture
def run_dir(pristine_run, tmp_path, request):
    """This test's own copy of the run, reviewed in its own Argilla dataset (named after the test)."""
    out = tmp_path / "run"
    shutil.copytree(pristine_run, out)
    shutil.copyfile(pristine_run.parent / "pipeline.yaml", tmp_path / "pipeline.yaml")
    name = "qa-" + request.node.name.removeprefix("test_").replace("_", "-")[:40]
    text = (out / "pipeline.yaml").read_text()
    assert "review:\n" in text
    (out / "pipeline.yaml").write_text(text.replace("review:\n", f"review:\n  dataset: {name}\n", 1))
    return out


def _name(run_dir) -> str:
    return yaml.safe_load((run_dir / "pipeline.yaml").read_text())["review"]["dataset"]


def _rows(run_dir):
    from distillflow.engine.outputs import read_jsonl

    return read_jsonl(run_dir / "data" / "curated.jsonl"), read_jsonl(run_dir / "data" / "rejected.jsonl")


def _client():
    import argilla as rg

    return rg.Argilla(api_url=os.environ["ARGILLA_API_URL"], api_key=os.environ["ARGILLA_API_KEY"])


def _workspace(name: str):
    """The workspace `name`, created when this test runs before any push made it (tests run in any order)."""
    import argilla as rg

    client = _client()
    return client.workspaces(name) or rg.Workspace(name=name, client=client).create()


def _dataset(name: str):
    from distillflow.review.connect import find_dataset

    return find_dataset(_client(), name, "distillflow")


def _server_ids(dataset) -> dict[str, str]:
    return {str(r.id): str(r._server_id) for r in dataset.records()}


# ---------------------------------------------------------------------------- push


def test_run_pushes_automatically_when_the_pipeline_has_review(argilla, run_dir, tmp_path):
    import distillflow as df
    from benchmarks.fake_endpoint import EndpointThread

    text = (run_dir.parent / "pipeline.yaml").read_text()
    text = text.replace("  auto_push: false", "  dataset: qa-auto")
    assert "dataset: qa-auto" in text
    with EndpointThread(latency=(0.0, 0.0)) as ep:
        text = text.replace(text.split('base_url: "')[1].split('"')[0], ep.base_url)
        (tmp_path / "p.yaml").write_text(text)
        res = df.run(df.load(tmp_path / "p.yaml"), out=tmp_path / "run", progress=False)
    assert res.notes and res.notes[0].startswith("review: pushed 6 new record(s)"), res.notes
    assert len(list(_dataset("qa-auto").records())) == 6


def test_push_creates_the_dataset_from_the_pipeline(argilla, run_dir):
    from distillflow.review.push import push

    result = push(run_dir)
    assert (result.pushed, result.already, result.selected) == (6, 0, 6)
    assert result.url.startswith(argilla.url) and "/dataset/" in result.url
    ds = _dataset(_name(run_dir))
    assert [f.name for f in ds.settings.fields] == ["prompt", "system", "response", "judge"]
    assert [q.name for q in ds.settings.questions] == ["decision", "quality", "corrected_response", "comment"]
    assert {m.name for m in ds.settings.metadata} >= {"teacher", "judge_score", "verify_pass", "cost_usd"}
    assert [v.name for v in ds.settings.vectors] == ["embedding"]
    curated, _ = _rows(run_dir)
    records = {str(r.id): r for r in ds.records(with_suggestions=True)}
    assert set(records) == {r["id"] for r in curated}  # Argilla ids are our stable row ids
    first = records[curated[0]["id"]]
    assert first.fields["prompt"] == "What is 2+2?" and first.fields["system"] == "You are a terse tutor."
    assert first.fields["response"] == curated[0]["response"]
    assert first.metadata["teacher"] == "tutor" and first.metadata["judge_score"] == 5.0
    sugg = {s.question_name: s.value for s in first.suggestions}
    assert sugg == {"decision": "accept", "quality": 5}
    low = {s.question_name: s.value for s in records[curated[3]["id"]].suggestions}
    assert low["decision"] == "reject"


def test_push_again_creates_no_duplicates_even_without_local_state(argilla, run_dir):
    from distillflow.review.push import push

    assert push(run_dir).pushed == 6
    again = push(run_dir)
    assert (again.pushed, again.already) == (0, 6)
    (run_dir / "review" / "state.json").unlink()  # e.g. a fresh checkout: upsert by id still dedups
    third = push(run_dir)
    assert third.pushed == 6
    assert len(list(_dataset(_name(run_dir)).records())) == 6


def _grow(run_dir, n: int, tag: str) -> list[dict]:
    """More generations: copies of the first row with new answers (and new stable ids)."""
    import copy

    from distillflow.engine.outputs import write_jsonl

    curated, _ = _rows(run_dir)
    new = []
    for i in range(n):
        row = copy.deepcopy(curated[0])
        row["id"] = f"{tag}{i:0{16 - len(tag)}d}"
        row["response"] = f"Answer: What is 2+2? The sum is four ({tag} {i})."
        row["generation_index"] = i + 1
        new.append(row)
    write_jsonl(run_dir / "data" / "curated.jsonl", curated + new)
    return new


def test_push_after_more_generations_adds_only_the_new_ones(argilla, run_dir):
    from distillflow.review.push import push

    assert push(run_dir).pushed == 6
    _grow(run_dir, 2, "more")
    result = push(run_dir)
    assert (result.pushed, result.already) == (2, 6)
    assert len(list(_dataset(_name(run_dir)).records())) == 8


class _FlakyProxy:
    """Forwards to Argilla, but answers 500 to the N-th bulk upsert (a server dying mid-push)."""

    def __init__(self, upstream: str, fail_on: int):
        import httpx

        self.bulk_calls = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "PUT" and self.path.endswith("/records/bulk"):
                    proxy.bulk_calls += 1
                    if proxy.bulk_calls == fail_on:
                        payload = b'{"detail": "Internal Server Error"}'
                        self.send_response(500)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                resp = httpx.request(self.command, upstream + self.path, content=body, headers=headers, timeout=60)
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_a_5xx_mid_push_loses_nothing_and_the_rerun_resumes(argilla, run_dir):
    from distillflow.errors import ConfigurationError
    from distillflow.review.push import PushState, push

    assert push(run_dir).pushed == 6
    new = _grow(run_dir, 5, "flaky")
    proxy = _FlakyProxy(argilla.url, fail_on=2)
    try:
        with pytest.raises(ConfigurationError) as err:
            push(run_dir, batch_size=2, api_url=proxy.url)
    finally:
        proxy.close()
    msg = str(err.value)
    assert "Argilla answered 500 while pushing batch 2 of 3" in msg
    assert "The 2 record(s) pushed before it" in msg and "to push the 3 left" in msg
    assert "distillflow review push" in msg and KEY not in msg
    ds = _dataset(_name(run_dir))
    state = PushState.load(run_dir).pushed(ds.id)
    assert {r["id"] for r in new[:2]} <= state and not ({r["id"] for r in new[2:]} & state)
    assert len(list(ds.records())) == 6 + 2
    result = push(run_dir, batch_size=2)
    assert (result.pushed, result.already) == (3, 6 + 2)
    assert len(list(ds.records())) == 6 + 5


def test_a_dataset_with_an_incompatible_schema_is_refused(argilla, run_dir, tmp_path):
    import argilla as rg

    from distillflow.errors import ConfigurationError
    from distillflow.review.push import push

    rg.Dataset(
        name="not-ours", workspace=_workspace("distillflow"), client=_client(),
        settings=rg.Settings(fields=[rg.TextField("text")], questions=[rg.LabelQuestion("label", labels=["a", "b"])]),
    ).create()
    text = (run_dir / "pipeline.yaml").read_text().replace(f"  dataset: {_name(run_dir)}\n", "  dataset: not-ours\n")
    (run_dir / "pipeline.yaml").write_text(text)
    with pytest.raises(ConfigurationError) as err:
        push(run_dir)
    msg = str(err.value)
    assert "'not-ours' in workspace 'distillflow' exists with an incompatible schema" in msg
    assert "no label question 'decision'" in msg and "set review.dataset" in msg


def test_wrong_key_and_unreachable_server_exit_1_with_the_fix(argilla, run_dir, monkeypatch):
    from typer.testing import CliRunner

    from distillflow.cli import app

    monkeypatch.setenv("ARGILLA_API_KEY", "not-the-key")
    res = CliRunner().invoke(app, ["review", "push", str(run_dir)])
    out = res.output + getattr(res, "stderr", "")
    assert res.exit_code == 1 and "rejected the API key in ARGILLA_API_KEY" in out and "Traceback" not in out
    assert "not-the-key" not in out
    monkeypatch.setenv("ARGILLA_API_KEY", KEY)
    monkeypatch.setenv("ARGILLA_API_URL", f"http://127.0.0.1:{_free_port()}")
    res = CliRunner().invoke(app, ["review", "pull", str(run_dir)])
    out = res.output + getattr(res, "stderr", "")
    assert res.exit_code == 1 and "cannot reach Argilla" in out and "distillflow review up" in out


# ---------------------------------------------------------------------------- review + pull


def _ui_submit(url: str, auth: dict, record_id: str, values: dict, status: str = "submitted") -> dict:
    """What the UI's Submit button sends (the path osmem cannot serve without the adapter)."""
    import httpx

    body = {"values": {q: {"value": v} for q, v in values.items()}, "status": status}
    resp = httpx.post(f"{url}/api/v1/records/{record_id}/responses", json=body, headers=auth)
    assert resp.status_code == 201, resp.text
    return resp.json()


@contextmanager
def stage(name: str):
    """One named stage of the scenario: a failure says which stage it was in."""
    print(f"stage: {name}", flush=True)
    try:
        yield
    except BaseException as e:
        e.add_note(f"(in scenario stage '{name}')")
        raise


def _sign_in_bob(argilla) -> dict:
    """bob signs in like the UI does (username + password -> bearer token)."""
    import argilla as rg
    import httpx

    client = _client()
    if not any(u.username == "bob" for u in client.users):
        rg.User(username="bob", password="bob-password-1", role="annotator", client=client).create()
    if not any(u.username == "bob" for u in _workspace("distillflow").users):
        _workspace("distillflow").add_user("bob")
    token = httpx.post(f"{argilla.url}/api/v1/token", data={"username": "bob", "password": "bob-password-1"})
    token.raise_for_status()
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def _review_like_the_ui(argilla, run_dir) -> list[dict]:
    """Two reviewers answer the six pushed prompts' records through the HTTP API, exactly like the UI."""
    import httpx

    bob_auth = _sign_in_bob(argilla)
    owner = {"X-Argilla-Api-Key": KEY}
    curated, _ = _rows(run_dir)
    ids = _server_ids(_dataset(_name(run_dir)))
    r = [ids[row["id"]] for row in curated[:6]]
    url = argilla.url
    _ui_submit(url, owner, r[0], {"decision": "accept", "quality": 5})
    _ui_submit(url, owner, r[1], {"decision": "accept", "quality": 4, "corrected_response": "2+2 is 4... I mean 3+5 is 8."})
    draft = _ui_submit(url, owner, r[2], {"decision": "accept"}, status="draft")
    # The reviewer changes their mind: the UI updates the response in place (another scripted update).
    httpx.put(
        f"{url}/api/v1/responses/{draft['id']}", headers={"X-Argilla-Api-Key": KEY},
        json={"values": {"decision": {"value": "reject"}, "comment": {"value": "made up a fact"}}, "status": "submitted"},
    ).raise_for_status()
    _ui_submit(url, owner, r[3], {"decision": "reject", "quality": 1})
    _ui_submit(url, owner, r[4], {"decision": "accept", "quality": 4})
    # bob overlaps on three records: agrees on 0 and 3, disagrees on 2
    _ui_submit(url, bob_auth, r[0], {"decision": "accept", "quality": 4})
    _ui_submit(url, bob_auth, r[2], {"decision": "accept"})
    _ui_submit(url, bob_auth, r[3], {"decision": "reject"})
    return curated


def test_review_loop_scenario(argilla, run_dir):
    """push 6 + 2 + 5 -> two reviewers answer -> indexed -> pull -> idempotent -> similarity -> restart."""
    import httpx
    import pyarrow.parquet as pq

    from distillflow.engine.outputs import read_jsonl
    from distillflow.review.pull import pull, trainable
    from distillflow.review.push import push

    name = _name(run_dir)
    with stage("push the run, then two rounds of more generations"):
        assert push(run_dir).pushed == 6
        _grow(run_dir, 2, "more")
        assert push(run_dir).pushed == 2
        _grow(run_dir, 5, "flaky")
        assert push(run_dir).pushed == 5
        ds = _dataset(name)
        assert len(list(ds.records())) == 13

    with stage("reviewers answer like the UI"):
        reviewed = _review_like_the_ui(argilla, run_dir)

    with stage("responses are indexed"):
        progress = httpx.get(f"{argilla.url}/api/v1/datasets/{ds.id}/progress", headers={"X-Argilla-Api-Key": KEY}).json()
        assert progress["total"] == 13 and progress["completed"] == 5
        # the owner's own queue, filtered by response status in the search index
        body = {"filters": {"and": [{"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["submitted"]}]}}
        found = httpx.post(
            f"{argilla.url}/api/v1/me/datasets/{ds.id}/records/search", headers={"X-Argilla-Api-Key": KEY}, json=body
        ).json()
        assert found["total"] == 5

    with stage("pull applies decisions with provenance and reports agreement"):
        before_curated, before_rejected = _rows(run_dir)
        result = pull(run_dir)
        curated, rejected = _rows(run_dir)
        ids = [row["id"] for row in reviewed]
        by_id = {r["id"]: r for r in curated}

        assert (result.accepted, result.rejected, result.corrected) == (3, 2, 1)
        assert result.unreviewed == 1 + 7  # the sixth prompt + the grown rows
        assert set(by_id) == set(ids[:2] + ids[4:6]) | {r["id"] for r in before_curated[6:]}
        assert by_id[ids[0]]["provenance"]["review"] == {
            "decision": "accepted", "reviewer": "argilla, bob", "quality": 4.5, "comment": None, "corrected": False,
        }
        fixed = by_id[ids[1]]
        assert fixed["response"] == "2+2 is 4... I mean 3+5 is 8."
        assert fixed["provenance"]["review"]["corrected"] is True
        assert fixed["provenance"]["review"]["original_response"] == reviewed[1]["response"]
        assert by_id[ids[5]]["provenance"]["review"] == {"decision": "unreviewed", "pushed": True}

        gone = {r["id"]: r for r in rejected}
        assert set(gone) == {ids[2], ids[3]} and len(rejected) == len(before_rejected) + 2
        assert gone[ids[2]]["rejected_by"] == "review"
        assert gone[ids[2]]["reason"] == "review: argilla: made up a fact"  # argilla rejects, bob accepts: tie rejects
        assert gone[ids[3]]["reason"] == "review: rejected by argilla, bob"

        # backups and mirrors
        assert len(read_jsonl(run_dir / "data" / "curated.jsonl.bak")) == len(before_curated)
        assert pq.read_table(run_dir / "data" / "curated.parquet").num_rows == len(curated)
        assert pq.read_table(run_dir / "data" / "rejected.parquet").num_rows == len(rejected)
        assert len(read_jsonl(run_dir / "review" / "responses.jsonl")) == 13

        # mode: required -> training sees only the accepted rows
        assert sorted(r["id"] for r in trainable(curated, "required")) == sorted([ids[0], ids[1], ids[4]])

        # agreement on the known set (threshold 4): judge accepts 0,1,2; humans accept 0,1,4
        rep = json.loads(result.report_path.read_text())
        jh = rep["agreement"]["judge_vs_human"]
        assert (jh["n"], jh["agreement"], jh["judge_precision"], jh["kappa"]) == (5, 0.6, round(2 / 3, 4), 0.1667)
        rr = rep["agreement"]["between_reviewers"]
        assert (rr["records"], rr["comparisons"], rr["agreement"], rr["kappa"]) == (3, 3, round(2 / 3, 4), 0.4)
        assert rep["counts"]["trainable"] == 3 and rep["mode"] == "required"

    with stage("pull again, and offline, is idempotent"):
        first = _rows(run_dir)
        pull(run_dir)
        assert _rows(run_dir) == first
        pull(run_dir, offline=True)
        assert _rows(run_dir) == first

    with stage("similarity search ranks by cosine"):
        server_ids = _server_ids(ds)
        anchor = server_ids[reviewed[0]["id"]]
        body = {"query": {"vector": {"name": "embedding", "record_id": anchor}}}
        resp = httpx.post(
            f"{argilla.url}/api/v1/me/datasets/{ds.id}/records/search", headers={"X-Argilla-Api-Key": KEY},
            json=body, params={"limit": 12},
        )
        assert resp.status_code == 200, resp.text
        items = resp.json()["items"]
        scores = [i["query_score"] for i in items]
        assert scores == sorted(scores, reverse=True) and anchor not in [i["record"]["id"] for i in items]
        # the grown rows are near-copies of the anchor (same prompt, similar answer): they rank first
        assert items[0]["record"]["external_id"].startswith(("more", "flaky"))
        assert items[-1]["record"]["external_id"] in {r["id"] for r in reviewed[1:]}

    with stage("restart keeps the data and rebuilds the index"):
        from distillflow.review import server

        data = Path(argilla.data_dir)
        assert server.up(port=argilla.ports["argilla"], data_dir=data).pids == server.status(data_dir=data)["pids"]
        assert server.status(data_dir=data)["running"] is True
        server.down(data_dir=data)
        assert server.status(data_dir=data)["running"] is False
        info = server.up(port=argilla.ports["argilla"], data_dir=data)
        ds = _dataset(name)
        assert len(list(ds.records())) == 13
        found = httpx.post(
            f"{info.url}/api/v1/me/datasets/{ds.id}/records/search", headers={"X-Argilla-Api-Key": KEY},
            json={"query": {"text": {"q": "capital"}}},
        ).json()
        assert found["total"] == 1  # osmem's index came back from SQLite
        progress = httpx.get(f"{info.url}/api/v1/datasets/{ds.id}/progress", headers={"X-Argilla-Api-Key": KEY}).json()
        assert progress["completed"] == 5


# ---------------------------------------------------------------------------- browser


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
UI_WAIT_MS = 90_000  # generous: a loaded 2-core CI machine renders Argilla's UI slowly


def test_the_argilla_ui_shows_a_pushed_record(argilla, run_dir, tmp_path):
    need_module("playwright", "pip install -e '.[dev]'")
    chromium = need_binary("chromium", "apt-get install -y chromium (make browser does it as root)")
    from playwright.sync_api import expect, sync_playwright

    from distillflow.review.push import push

    # State: the six records pushed; the owner answered all but the first (judge score 5), which is
    # therefore the one record of the owner's pending queue that the UI shows.
    assert push(run_dir).pushed == 6
    curated, _ = _rows(run_dir)
    ds = _dataset(_name(run_dir))
    ids = _server_ids(ds)
    owner = {"X-Argilla-Api-Key": KEY}
    for row in curated[1:]:
        _ui_submit(argilla.url, owner, ids[row["id"]], {"decision": "accept", "quality": 3})
    pending = curated[0]

    # an ignored folder: `make screenshots` copies the picture to docs/img/ for the README
    shot = ROOT / "test-artifacts" / "argilla_review.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        page = browser.new_page()
        # page actions only: Playwright's expect(...) keeps its own 5 s default, so each expect passes timeout=
        page.set_default_timeout(UI_WAIT_MS)
        try:
            page.goto(f"{argilla.url}/sign-in")
            page.locator("input:not([type=password])").first.fill(argilla.username)
            page.locator("input[type=password]").fill(argilla.password)
            page.locator("button[type=submit]").click()
            page.wait_for_url(lambda u: "sign-in" not in u)
            page.goto(f"{argilla.url}/dataset/{ds.id}/annotation-mode")
            # wait for the state, not for time: the pending record and its form, pre-filled by the judge
            expect(page.get_by_text(pending["response"]).first).to_be_visible(timeout=UI_WAIT_MS)
            decision = page.locator('[aria-label="Question: decision"]')
            expect(page.get_by_text("Keep this answer for training?").first).to_be_visible(timeout=UI_WAIT_MS)
            submit = page.locator(".footer-form button[type=submit]")
            text = page.inner_text("body")
            page.screenshot(path=str(shot), full_page=False)
            # Overrule the judge in the form and press Submit: the scripted update osmem lacks.
            decision.get_by_text("Reject", exact=True).click()
            page.locator('[aria-label="Question: comment"] [contenteditable=true]').click()
            page.keyboard.type("too vague")
            expect(page.locator('[aria-label="Question: comment"]')).to_contain_text("too vague", timeout=UI_WAIT_MS)
            expect(submit).to_be_enabled(timeout=UI_WAIT_MS)  # the decision registered: every required answer is given
            with page.expect_response(lambda r: r.url.endswith("/responses") and r.request.method == "POST") as sent:
                submit.click()
            assert sent.value.status == 201
        except Exception:
            page.screenshot(path=str(shot.with_name("argilla_review_failure.png")))
            raise
        finally:
            browser.close()
    assert pending["prompt"] in text and pending["response"] in text
    assert sum(row["response"] in text for row in curated) == 1  # only the pending record is shown
    assert "You are a terse tutor." in text and "Keep this answer for training?" in text
    assert "judge says 5" in text  # the judge's opinion field
    record = next(r for r in ds.records(with_responses=True) if str(r.id) == pending["id"])
    answer = {resp.question_name: resp.value for resp in record.responses}
    assert answer["decision"] == "reject" and answer["comment"] == "too vague"
    assert answer["quality"] == 5  # the judge's pre-filled rating was kept
    assert shot.stat().st_size > 10_000
