"""A local server with both providers' batch APIs, for tests and benchmarks (aiohttp.web).

OpenAI (base_url ``http://127.0.0.1:PORT/v1``): ``POST /v1/files`` (multipart, purpose ``batch``),
``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. Output and error files as OpenAI
writes them: answers in the output file, failed lines (and, for an expired batch, the lines
not processed, code ``batch_expired``) in the error file.

Anthropic (base_url ``http://127.0.0.1:PORT``): ``POST /v1/messages/batches``,
``GET /v1/messages/batches``, ``GET /v1/messages/batches/{id}``, ``.../cancel``, ``.../results``
(JSONL of ``succeeded | errored | canceled | expired`` results).

Limits (requests and bytes per batch) are enforced like the providers do, with configurable
values so tests can exercise splitting. A batch ends when it is retrieved after ``delay_s``
unless ``hold`` is set (then it stays ``in_progress`` until released, cancelled or expired by
``expire_held``). Lines are scripted through the last message's content: ``@@{"error": 500,
"times": 1}`` (the first attempt of that content errors with a 500, later ones answer),
``@@{"error": 400}`` (always), ``@@{"expire": 1}`` (the first 1 attempt is not processed
before the batch expires). A judge's rubric prompt (it asks for ``Score: N``) is answered with
``Score: K``, K taken from ``score=K`` in the graded text (default 4). Counters (``stats``, also
``GET /stats``): files uploaded, batches created and lines submitted per provider, (lines, bytes) of each batch, submissions per custom_id,
cancels, result downloads.

Run standalone: ``python -m benchmarks.fake_batch_server`` prints ``LISTENING http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
import uuid
from collections import Counter

from aiohttp import web

from benchmarks.fake_endpoint import AppThread, _free_socket, _start

__all__ = ["BatchServerThread", "make_app"]

_STATE = web.AppKey("state", dict)
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _new_stats() -> dict:
    return {"files_uploaded": 0, "batches_created": Counter(), "lines_submitted": Counter(),
            "submissions": Counter(), "cancels": 0, "downloads": 0, "rejected": 0, "batch_sizes": []}


def make_app(openai_max_requests: int = 50_000, openai_max_bytes: int = 200 * 1024 * 1024,
             anthropic_max_requests: int = 100_000, anthropic_max_bytes: int = 256 * 1024 * 1024,
             delay_s: float = 0.0, hold: bool = False) -> web.Application:
    app = web.Application(client_max_size=1024 ** 3)
    state = app[_STATE] = {
        "cfg": {"delay_s": delay_s, "hold": hold, "expire_held": False},
        "limits": {"openai": (openai_max_requests, openai_max_bytes),
                   "anthropic": (anthropic_max_requests, anthropic_max_bytes)},
        "files": {}, "openai": {}, "anthropic": {}, "attempts": Counter(), "stats": _new_stats(),
    }
    stats = state["stats"]

    def oai_error(status: int, message: str, type_: str = "invalid_request_error") -> web.Response:
        stats["rejected"] += 1
        return web.json_response({"error": {"message": message, "type": type_, "code": None}}, status=status)

    def ant_error(status: int, message: str, type_: str = "invalid_request_error") -> web.Response:
        stats["rejected"] += 1
        return web.json_response({"type": "error", "error": {"type": type_, "message": message}}, status=status)

    # -- line processing (shared) ------------------------------------------------------------
    def process(messages: list[dict]) -> tuple[str, dict]:
        """('ok', answer) | ('error', {status, message}) | ('expired', {}) for one line's attempt."""
        content = str(messages[-1].get("content", "")) if messages else ""
        if content.startswith("@@"):
            spec = json.loads(content[2:content.find("}") + 1])
            state["attempts"][content] += 1
            n = state["attempts"][content]
            if n <= spec.get("times", spec.get("expire", 10 ** 9)):
                if "expire" in spec:
                    return "expired", {}
                if "error" in spec:
                    return "error", {"status": int(spec["error"]), "message": f"scripted {spec['error']}"}
        if "Score: N" in content:  # a distillflow judge's rubric prompt: grade it, "score=K" in the answer sets K
            m = re.search(r"score=(\d)", content)
            text = f"Rationale: scripted grade.\nScore: {m.group(1) if m else 4}"
        else:
            text = "Answer: " + content[:160]
        return "ok", {"text": text, "in": len(content) // 4 + 1, "out": len(text) // 4 + 1}

    # -- OpenAI files + batches ------------------------------------------------------------
    async def upload(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("purpose") != "batch":
            return oai_error(400, "purpose must be 'batch' for batch input files")
        f = form.get("file")
        if f is None or not hasattr(f, "file"):
            return oai_error(400, "missing file")
        data = f.file.read()
        if len(data) > state["limits"]["openai"][1]:
            return oai_error(400, f"File is too large: {len(data)} bytes, the limit is {state['limits']['openai'][1]}")
        fid = "file-" + uuid.uuid4().hex[:24]
        state["files"][fid] = {"data": data, "filename": f.filename, "purpose": "batch", "created_at": int(time.time())}
        stats["files_uploaded"] += 1
        return web.json_response(_file_obj(fid, state["files"][fid]))

    def _file_obj(fid: str, f: dict) -> dict:
        return {"id": fid, "object": "file", "bytes": len(f["data"]), "created_at": f["created_at"],
                "filename": f["filename"], "purpose": f["purpose"], "status": "processed"}

    async def get_file(request: web.Request) -> web.Response:
        f = state["files"].get(request.match_info["fid"])
        return web.json_response(_file_obj(request.match_info["fid"], f)) if f else oai_error(404, "No such file")

    async def file_content(request: web.Request) -> web.Response:
        f = state["files"].get(request.match_info["fid"])
        if f is None:
            return oai_error(404, "No such file")
        stats["downloads"] += 1
        return web.Response(body=f["data"], content_type="application/octet-stream")

    def new_file(lines: list[dict], purpose: str) -> str | None:
        if not lines:
            return None
        fid = "file-" + uuid.uuid4().hex[:24]
        data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
        state["files"][fid] = {"data": data, "filename": f"{purpose}.jsonl", "purpose": purpose,
                               "created_at": int(time.time())}
        return fid

    async def create_batch(request: web.Request) -> web.Response:
        body = await request.json()
        f = state["files"].get(body.get("input_file_id"))
        if f is None:
            return oai_error(404, f"No such file: {body.get('input_file_id')}")
        if body.get("completion_window") != "24h" or body.get("endpoint") != "/v1/chat/completions":
            return oai_error(400, "completion_window must be '24h' and endpoint '/v1/chat/completions'")
        bid = "batch_" + uuid.uuid4().hex[:24]
        now = int(time.time())
        b = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
             "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
             "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
             "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
             "expired_at": None, "cancelling_at": None, "cancelled_at": None,
             "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata")}
        lines, errors = [], []
        seen = set()
        for i, raw in enumerate(f["data"].splitlines()):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                cid = line["custom_id"]
                assert line["method"] == "POST" and line["url"] == "/v1/chat/completions" and line["body"]["messages"]
            except Exception:
                errors.append({"code": "invalid_request", "message": "invalid line", "line": i + 1})
                continue
            if cid in seen:
                errors.append({"code": "duplicate_custom_id", "message": f"duplicate custom_id {cid}", "line": i + 1})
            seen.add(cid)
            lines.append(line)
        if len(lines) > state["limits"]["openai"][0]:
            errors.append({"code": "too_many_requests", "message": f"{len(lines)} requests, the limit is "
                           f"{state['limits']['openai'][0]}", "line": None})
        stats["batches_created"]["openai"] += 1
        if errors:
            stats["rejected"] += 1
            b.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
        else:
            b.update(status="in_progress", in_progress_at=now)
            b["request_counts"]["total"] = len(lines)
            stats["lines_submitted"]["openai"] += len(lines)
            stats["batch_sizes"].append((len(lines), len(f["data"])))
            for line in lines:
                stats["submissions"][line["custom_id"]] += 1
        state["openai"][bid] = {"obj": b, "lines": lines, "t0": time.monotonic()}
        return web.json_response(b)

    def advance_openai(rec: dict, cancel: bool = False) -> None:
        b = rec["obj"]
        if b["status"] not in ("in_progress", "validating"):
            return
        cfg = state["cfg"]
        if not cancel and not (cfg["hold"] and cfg["expire_held"]):
            if cfg["hold"] or time.monotonic() - rec["t0"] < cfg["delay_s"]:
                return
        now = int(time.time())
        out, err = [], []
        expired = cfg["hold"] and cfg["expire_held"]
        for line in rec["lines"]:
            cid = line["custom_id"]
            if cancel or expired:
                if expired:
                    err.append({"id": "batch_req_" + uuid.uuid4().hex[:16], "custom_id": cid, "response": None,
                                "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}})
                continue
            kind, res = process(line["body"]["messages"])
            if kind == "expired":
                expired = True
                err.append({"id": "batch_req_" + uuid.uuid4().hex[:16], "custom_id": cid, "response": None,
                            "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}})
            elif kind == "error":
                err.append({"id": "batch_req_" + uuid.uuid4().hex[:16], "custom_id": cid, "error": None,
                            "response": {"status_code": res["status"], "request_id": uuid.uuid4().hex,
                                         "body": {"error": {"message": res["message"], "type": "server_error" if res["status"] >= 500 else "invalid_request_error"}}}})
            else:
                body = line["body"]
                out.append({"id": "batch_req_" + uuid.uuid4().hex[:16], "custom_id": cid, "error": None,
                            "response": {"status_code": 200, "request_id": uuid.uuid4().hex, "body": {
                                "id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion",
                                "created": now, "model": body.get("model"),
                                "choices": [{"index": 0, "message": {"role": "assistant", "content": res["text"]},
                                             "finish_reason": "stop"}],
                                "usage": {"prompt_tokens": res["in"], "completion_tokens": res["out"],
                                          "total_tokens": res["in"] + res["out"]}}}})
        b["request_counts"].update(completed=len(out), failed=len(err))
        b["output_file_id"] = new_file(out, "batch_output")
        b["error_file_id"] = new_file(err, "batch_output")
        if cancel:
            b.update(status="cancelled", cancelling_at=now, cancelled_at=now)
        elif expired:
            b.update(status="expired", expired_at=now)
        else:
            b.update(status="completed", finalizing_at=now, completed_at=now)

    async def get_batch(request: web.Request) -> web.Response:
        rec = state["openai"].get(request.match_info["bid"])
        if rec is None:
            return oai_error(404, "No such batch")
        advance_openai(rec)
        return web.json_response(rec["obj"])

    async def list_batches(request: web.Request) -> web.Response:
        data = [rec["obj"] for rec in reversed(list(state["openai"].values()))]
        limit = int(request.query.get("limit", 20))
        return web.json_response({"object": "list", "data": data[:limit], "first_id": data[0]["id"] if data else None,
                                  "last_id": data[min(limit, len(data)) - 1]["id"] if data else None, "has_more": False})

    async def cancel_batch(request: web.Request) -> web.Response:
        rec = state["openai"].get(request.match_info["bid"])
        if rec is None:
            return oai_error(404, "No such batch")
        stats["cancels"] += 1
        advance_openai(rec, cancel=True)
        return web.json_response(rec["obj"])

    # -- Anthropic message batches ---------------------------------------------------------
    def iso(t: float | None) -> str | None:
        return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"

    def ant_obj(rec: dict) -> dict:
        counts = Counter(r["result"]["type"] for r in rec["results"]) if rec["results"] is not None else Counter()
        ended = rec["status"] == "ended"
        return {"id": rec["id"], "type": "message_batch", "processing_status": rec["status"],
                "request_counts": {"processing": 0 if ended else len(rec["requests"]),
                                   "succeeded": counts["succeeded"], "errored": counts["errored"],
                                   "canceled": counts["canceled"], "expired": counts["expired"]},
                "created_at": iso(rec["created"]), "expires_at": iso(rec["created"] + 86400),
                "ended_at": iso(rec.get("ended")), "archived_at": None,
                "cancel_initiated_at": iso(rec.get("cancel_at")),
                "results_url": f"{rec['root']}/v1/messages/batches/{rec['id']}/results" if ended else None}

    async def ant_create(request: web.Request) -> web.Response:
        # the SDK sends its key as x-api-key (older releases) or a bearer token (newer ones)
        if not (request.headers.get("x-api-key") or request.headers.get("authorization")) \
                or not request.headers.get("anthropic-version"):
            return ant_error(401, "an API key and the anthropic-version header are required", "authentication_error")
        raw = await request.read()
        max_n, max_b = state["limits"]["anthropic"]
        if len(raw) > max_b:
            return ant_error(413, f"request of {len(raw)} bytes exceeds {max_b}", "request_too_large")
        reqs = json.loads(raw).get("requests") or []
        if not reqs or len(reqs) > max_n:
            return ant_error(400, f"requests: between 1 and {max_n} items, got {len(reqs)}")
        ids = [r.get("custom_id", "") for r in reqs]
        bad = [c for c in ids if not _CUSTOM_ID.match(c)]
        if bad or len(set(ids)) != len(ids):
            return ant_error(400, f"custom_id must match ^[a-zA-Z0-9_-]{{1,64}}$ and be unique: {(bad or ids)[0]!r}")
        for r in reqs:
            p = r.get("params") or {}
            if not p.get("model") or not p.get("max_tokens") or not p.get("messages"):
                return ant_error(400, f"{r['custom_id']}: params need model, max_tokens and messages")
        bid = "msgbatch_" + uuid.uuid4().hex[:24]
        root = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        rec = {"id": bid, "requests": reqs, "status": "in_progress", "created": time.time(), "t0": time.monotonic(),
               "results": None, "root": root}
        state["anthropic"][bid] = rec
        stats["batches_created"]["anthropic"] += 1
        stats["lines_submitted"]["anthropic"] += len(reqs)
        stats["batch_sizes"].append((len(reqs), len(raw)))
        for c in ids:
            stats["submissions"][c] += 1
        return web.json_response(ant_obj(rec))

    def advance_ant(rec: dict, cancel: bool = False) -> None:
        if rec["status"] == "ended":
            return
        cfg = state["cfg"]
        expire_all = cfg["hold"] and cfg["expire_held"]
        if not cancel and not expire_all and (cfg["hold"] or time.monotonic() - rec["t0"] < cfg["delay_s"]):
            return
        results = []
        for r in rec["requests"]:
            if cancel or expire_all:
                results.append({"custom_id": r["custom_id"], "result": {"type": "canceled" if cancel else "expired"}})
                continue
            kind, res = process(r["params"]["messages"])
            if kind == "expired":
                results.append({"custom_id": r["custom_id"], "result": {"type": "expired"}})
            elif kind == "error":
                etype = "api_error" if res["status"] >= 500 else "invalid_request_error"
                results.append({"custom_id": r["custom_id"], "result": {"type": "errored", "error": {
                    "type": "error", "error": {"type": etype, "message": res["message"]}}}})
            else:
                results.append({"custom_id": r["custom_id"], "result": {"type": "succeeded", "message": {
                    "id": "msg_" + uuid.uuid4().hex[:20], "type": "message", "role": "assistant",
                    "model": r["params"]["model"], "content": [{"type": "text", "text": res["text"]}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": res["in"], "output_tokens": res["out"]}}}})
        rec.update(results=results, status="ended", ended=time.time())
        if cancel:
            rec["cancel_at"] = time.time()

    async def ant_get(request: web.Request) -> web.Response:
        rec = state["anthropic"].get(request.match_info["bid"])
        if rec is None:
            return ant_error(404, "batch not found", "not_found_error")
        advance_ant(rec)
        return web.json_response(ant_obj(rec))

    async def ant_list(request: web.Request) -> web.Response:
        data = [ant_obj(r) for r in reversed(list(state["anthropic"].values()))]
        limit = int(request.query.get("limit", 20))
        return web.json_response({"data": data[:limit], "has_more": False,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[min(limit, len(data)) - 1]["id"] if data else None})

    async def ant_cancel(request: web.Request) -> web.Response:
        rec = state["anthropic"].get(request.match_info["bid"])
        if rec is None:
            return ant_error(404, "batch not found", "not_found_error")
        stats["cancels"] += 1
        advance_ant(rec, cancel=True)
        return web.json_response(ant_obj(rec))

    async def ant_results(request: web.Request) -> web.Response:
        rec = state["anthropic"].get(request.match_info["bid"])
        if rec is None or rec["status"] != "ended":
            return ant_error(404, "results are available once processing has ended", "not_found_error")
        stats["downloads"] += 1
        body = b"".join(json.dumps(r).encode() + b"\n" for r in rec["results"])
        return web.Response(body=body, content_type="application/binary")

    # -- control ---------------------------------------------------------------------------
    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response({**{k: (dict(v) if isinstance(v, Counter) else v) for k, v in stats.items()
                                     if k != "submissions"},
                                  "max_submissions_per_line": max(stats["submissions"].values(), default=0),
                                  "distinct_lines": len(stats["submissions"]),
                                  "cpu_s": time.process_time()})

    async def control(request: web.Request) -> web.Response:
        state["cfg"].update(await request.json())
        return web.json_response(state["cfg"])

    r = app.router
    r.add_post("/v1/files", upload)
    r.add_get("/v1/files/{fid}", get_file)
    r.add_get("/v1/files/{fid}/content", file_content)
    r.add_post("/v1/batches", create_batch)
    r.add_get("/v1/batches", list_batches)
    r.add_get("/v1/batches/{bid}", get_batch)
    r.add_post("/v1/batches/{bid}/cancel", cancel_batch)
    r.add_post("/v1/messages/batches", ant_create)
    r.add_get("/v1/messages/batches", ant_list)
    r.add_get("/v1/messages/batches/{bid}", ant_get)
    r.add_post("/v1/messages/batches/{bid}/cancel", ant_cancel)
    r.add_get("/v1/messages/batches/{bid}/results", ant_results)
    r.add_get("/stats", get_stats)
    r.add_post("/control", control)
    return app


class BatchServerThread(AppThread):
    """The server on a background thread (for tests). ``root`` is ``http://127.0.0.1:PORT``;
    ``openai_url`` adds ``/v1``. ``stats`` and ``cfg`` are live; use :meth:`set` to change cfg."""

    name = "fake-batch-server"

    def __init__(self, **app_kwargs):
        super().__init__(make_app, **app_kwargs)

    @property
    def openai_url(self) -> str:
        return self.root + "/v1"

    @property
    def stats(self) -> dict:
        return self.app[_STATE]["stats"]

    def set(self, **cfg) -> None:
        """Change hold / delay_s / expire_held (applied on the server's loop)."""
        done = threading.Event()

        def apply():
            self.app[_STATE]["cfg"].update(cfg)
            done.set()

        self._loop.call_soon_threadsafe(apply)
        done.wait(10)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before a batch ends")
    args = ap.parse_args(argv)

    async def serve() -> None:
        sock = _free_socket()
        await _start(make_app(delay_s=args.delay), sock)
        print(f"LISTENING http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
