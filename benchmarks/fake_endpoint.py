"""A local OpenAI-compatible endpoint for benchmarks and tests (aiohttp.web).

It serves at most ``max_concurrency`` completions at once (the others queue, like a real
server's batch slots), each taking ``uniform(lo, hi)`` seconds, so its capacity is
``max_concurrency / mean latency`` requests per second. ``latency=(0, 0)`` answers at once
(to measure a client's own overhead). It counts requests and records how many were in flight.

Tests script failures through the last message's content: a content starting with ``@@``
followed by a JSON object, e.g. ``@@{"status": 429, "times": 2, "retry_after": "0.2"}``
(the first 2 attempts of that exact content get a 429, then 200), ``@@{"status": 400,
"message": "bad"}`` (every attempt), ``@@{"sleep": 5}`` (answer after 5 s),
``@@{"body": "not json"}`` (a malformed 200; with ``"times"`` only the first attempts),
``@@{"drop": true, "times": 1}`` (the connection is closed without an answer),
``@@{"truncate": true, "times": 1}`` (a 200 whose body stops half-way).

Fault mode (``fault_rate=0.2``, the benchmark ``benchmarks/faults.py``): each attempt fails
with that probability, in one of :data:`FAULTS` chosen at random (seeded by ``fault_seed``, per
prompt and attempt number, so a rerun fails the same attempts whatever order they arrive in; the
attempts are counted per process, so with ``--processes N`` a retry served by another process draws
that process's first attempt again):
429 with Retry-After, 500, 503, a hang of ``hang_s`` (past the client's timeout), a dropped
connection, a truncated body, an HTML page with status 200, a 200 without ``choices``, a 200
with empty ``choices``. Successful answers then carry a random tag, and ``GET /answers`` returns
every answer sent, by prompt, so a client's stored answers can be compared byte for byte.

Run standalone: ``python -m benchmarks.fake_endpoint --latency 0.2,0.3`` prints
``LISTENING http://127.0.0.1:PORT/v1`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

__all__ = ["FAULTS", "EndpointThread", "SharedGauge", "endpoint_process", "make_app"]

FAULTS = ("429", "500", "503", "hang", "drop", "truncate", "html", "no_choices", "empty_choices")


def _fault_for(seed: int, content: str, tries: dict, rate: float) -> str | None:
    """Fault mode: the fault of this attempt at ``content`` (None: it succeeds). Drawn from the seed,
    the content and how many attempts at it came before, not from the order in which concurrent
    requests happen to arrive: a rerun with the same seed fails the same attempts the same way."""
    n = tries.get(content, 0)
    tries[content] = n + 1
    draw = random.Random(f"{seed}:{n}:{content}")  # (a str seed is hashed with SHA-512: the same in every process)
    if draw.random() >= rate:
        return None
    return FAULTS[draw.randrange(len(FAULTS))]

_STATS = web.AppKey("stats", dict)
_CFG = web.AppKey("cfg", dict)


def _new_stats() -> dict:
    return {"requests": 0, "completions": 0, "in_flight": 0, "max_in_flight": 0,
            "busy_s": 0.0, "first_start": None, "last_end": None, "attempts": {}, "service_s": 0.0, "repeats": 0,
            "faults": {}, "sent": {}, "rejected": 0, "starts": [], "usage": [], "down": False, "refused_down": 0}


class SharedGauge:
    """Requests in flight across several endpoints (e.g. a teacher's replicas, each on its own
    thread): ``max`` is the most seen at once. Pass one to each endpoint's ``make_app``."""

    def __init__(self):
        self._lock = threading.Lock()
        self.now = 0
        self.max = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def exit(self) -> None:
        with self._lock:
            self.now -= 1


def make_app(max_concurrency: int = 64, latency: tuple[float, float] = (0.2, 0.3),
             logprobs: bool = True, model: str = "fake-teacher",
             gauge: SharedGauge | None = None, fault_rate: float = 0.0,
             fault_seed: int = 0, hang_s: float = 3.0, retry_after: str = "0.1",
             grade: bool = False, reject_above: int | None = None, down_after: int | None = None) -> web.Application:
    """Build the endpoint. ``app[_STATS]`` holds the counters also served at ``GET /stats``;
    ``gauge`` (optional) also counts this endpoint's requests in flight; with ``grade`` a judge
    prompt gets a parseable ``Score: N`` (N from a hash of the prompt). ``reject_above``: a
    request arriving while that many are already in flight gets HTTP 400 "over the concurrency
    limit" (counted in ``rejected``), like a provider enforcing a hard limit; every request's
    arrival time (``perf_counter``) is then kept in ``starts``. An outage: while ``stats["down"]``
    is true every request gets HTTP 500 "teacher down" (counted in ``refused_down``); with
    ``down_after`` it turns true once that many completions were answered (a test sets it back)."""
    app = web.Application()
    app[_STATS] = _new_stats()
    app[_CFG] = {"latency": latency, "logprobs": logprobs, "model": model}
    lo, hi = latency
    gate = asyncio.Semaphore(max_concurrency)  # created lazily-bound; aiohttp runs one loop
    stats = app[_STATS]
    seen: set = set()  # contents answered (200) at least once
    uniform, perf = random.uniform, time.perf_counter
    rng = random.Random(fault_seed)  # the answers' tags
    tries: dict[str, int] = {}  # attempts so far, by content (fault mode)

    async def chat(request: web.Request) -> web.Response:
        t0 = perf()
        stats["requests"] += 1
        stats["in_flight"] += 1
        if gauge is not None:
            gauge.enter()
        if stats["in_flight"] > stats["max_in_flight"]:
            stats["max_in_flight"] = stats["in_flight"]
        if stats["first_start"] is None:
            stats["first_start"] = t0
        try:
            if stats["down"]:
                stats["refused_down"] += 1
                return web.json_response({"error": {"message": "teacher down", "type": "server_error"}}, status=500)
            if reject_above is not None:
                stats["starts"].append(t0)
                if stats["in_flight"] > reject_above:
                    stats["rejected"] += 1
                    return web.json_response({"error": {"message": f"over the concurrency limit of {reject_above}",
                                                        "type": "limit"}}, status=400)
            body = json.loads(await request.read())
            messages = body.get("messages") or []
            content = str(messages[-1].get("content", "")) if messages else ""
            if content.startswith("@@"):
                scripted = await _scripted(content, stats, request)
                if scripted is not None:
                    return scripted
            if fault_rate:
                kind = _fault_for(fault_seed, content, tries, fault_rate)
                if kind is not None:
                    stats["faults"][kind] = stats["faults"].get(kind, 0) + 1
                    return await _fault(kind, request, hang_s, retry_after)
            async with gate:
                s0 = perf()
                if hi > 0:
                    await asyncio.sleep(uniform(lo, hi))
                stats["service_s"] += perf() - s0
            if grade and content.startswith("Grade the assistant response below"):
                # a judge prompt (steps/judge.py): a parseable verdict, the same for the same prompt
                text = f"Rationale: graded by the fake endpoint.\nScore: {1 + zlib.crc32(content.encode()) % 5}"
            else:
                text = "Answer: " + content[:160]
            if fault_rate:  # a tag per answer: an answer asked twice differs, so a copy is detectable
                text += f" #{rng.getrandbits(48):012x}"
                stats["sent"].setdefault(content, []).append(text)
            reply = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", model),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(content) // 4 + 1,
                          "completion_tokens": len(text) // 4 + 1,
                          "total_tokens": (len(content) + len(text)) // 4 + 2},
            }
            if logprobs and body.get("logprobs"):
                words = text.split()
                reply["choices"][0]["logprobs"] = {
                    "content": [{"token": w, "logprob": -0.01 * (i + 1), "bytes": None, "top_logprobs": []}
                                for i, w in enumerate(words)]
                }
            stats["completions"] += 1
            if reject_above is not None:  # (with starts: when each answered request began, and its tokens)
                stats["usage"].append((t0, reply["usage"]["total_tokens"]))
            if stats["completions"] == down_after:  # (once: a test may bring it back)
                stats["down"] = True
            if content in seen:  # the same prompt answered again: paid twice
                stats["repeats"] += 1
            else:
                seen.add(content)
            return web.Response(body=json.dumps(reply).encode(), content_type="application/json")
        finally:
            end = perf()
            stats["in_flight"] -= 1
            if gauge is not None:
                gauge.exit()
            stats["busy_s"] += end - t0
            stats["last_end"] = end

    async def models(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if auth == "Bearer bad-key":
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": model, "object": "model"}]})

    async def get_stats(request: web.Request) -> web.Response:
        out = {k: v for k, v in stats.items() if k not in ("attempts", "sent", "starts")}
        out["cpu_s"] = time.process_time()  # the endpoint's own CPU, to tell who is busy
        return web.json_response(out)

    async def answers(request: web.Request) -> web.Response:
        return web.json_response(stats["sent"])

    async def reset_stats(request: web.Request) -> web.Response:
        stats.clear()
        stats.update(_new_stats())
        return web.json_response({"ok": True})

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/answers", answers)
    app.router.add_post("/stats/reset", reset_stats)
    return app


async def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without answering (the client sees a reset / disconnect)."""
    request.transport.close()
    raise asyncio.CancelledError  # aiohttp ends the handler quietly; nothing is written


async def _truncated(request: web.Request) -> web.StreamResponse:
    """A 200 that announces a full body, sends half of it and closes the connection."""
    body = json.dumps({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant",
                       "content": "this body is cut off"}, "finish_reason": "stop"}]}).encode()
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                   "Content-Length": str(len(body))})
    await resp.prepare(request)
    await resp.write(body[: len(body) // 2])
    request.transport.close()
    raise asyncio.CancelledError


async def _fault(kind: str, request: web.Request, hang_s: float, retry_after: str) -> web.StreamResponse:
    if kind == "429":
        return web.json_response({"error": {"message": "rate limited", "type": "fault"}}, status=429,
                                 headers={"Retry-After": retry_after})
    if kind in ("500", "503"):
        return web.json_response({"error": {"message": f"fault {kind}", "type": "fault"}}, status=int(kind))
    if kind == "hang":
        await asyncio.sleep(hang_s)
        return web.json_response({"error": {"message": "hung", "type": "fault"}}, status=504)
    if kind == "drop":
        return await _drop(request)
    if kind == "truncate":
        return await _truncated(request)
    if kind == "html":
        return web.Response(text="<html><body><h1>502 Bad Gateway</h1>nginx</body></html>", status=200,
                            content_type="text/html")
    if kind == "no_choices":
        return web.json_response({"id": "x", "object": "chat.completion", "model": "m"})
    return web.json_response({"id": "x", "object": "chat.completion", "choices": []})  # empty_choices


async def _scripted(content: str, stats: dict, request: web.Request) -> web.StreamResponse | None:
    """Apply a ``@@{json}`` directive; None means 'answer normally now'."""
    spec, _ = json.JSONDecoder().raw_decode(content[2:])  # the object may hold braces (a body)
    attempts = stats["attempts"]
    attempts[content] = n = attempts.get(content, 0) + 1
    times = spec.get("times", 10**9)
    if "sleep" in spec and n <= times:
        await asyncio.sleep(float(spec["sleep"]))
    if spec.get("drop") and n <= times:
        return await _drop(request)
    if spec.get("truncate") and n <= times:
        return await _truncated(request)
    if "body" in spec and n <= times:  # a raw (malformed) body, 200 unless told otherwise
        return web.Response(text=spec["body"], status=int(spec.get("status", 200)))
    status = spec.get("status")
    if status and n <= spec.get("times", 10**9):
        headers = {"Retry-After": str(spec["retry_after"])} if "retry_after" in spec else None
        message = spec.get("message", f"scripted {status}")
        return web.json_response({"error": {"message": message, "type": "scripted"}},
                                 status=int(status), headers=headers)
    return None


def _free_socket(port: int = 0, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # several processes listen on one port; the kernel spreads connections over them
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


async def _start(app: web.Application, sock: socket.socket) -> web.AppRunner:
    # Short shutdown so that a test's deliberately hanging handler does not delay teardown.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=1024).start()
    return runner


class AppThread:
    """An aiohttp app on a background thread with its own event loop (for tests): ``root`` is
    ``http://127.0.0.1:PORT`` once started. Use as a context manager; the app is built by
    ``make(**app_kwargs)`` on that loop."""

    name = "fake-app"

    def __init__(self, make, **app_kwargs):
        self._make, self._kwargs = make, app_kwargs
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self.app: web.Application | None = None
        self.root = ""

    def _main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        sock = _free_socket()
        self.root = f"http://127.0.0.1:{sock.getsockname()[1]}"

        async def boot() -> web.AppRunner:
            self.app = self._make(**self._kwargs)
            return await _start(self.app, sock)

        runner = loop.run_until_complete(boot())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        # Handlers still sleeping (a test's deliberate hang) are cancelled, not destroyed.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    def start(self):
        self._thread.start()
        # Up to 60 s (a loaded CI machine can be slow to boot the app), and never hand back an app
        # that is not serving: its root would be "" and the test would fail far from the cause.
        deadline = time.monotonic() + 60
        while not self._ready.wait(0.1):
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.name} thread died before serving (see its traceback)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start serving within 60 s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class EndpointThread(AppThread):
    """The endpoint on a background thread with its own event loop (for tests).

    ``base_url`` ends in ``/v1``; ``stats`` is the live counter dict. Use as a context manager.
    """

    name = "fake-endpoint"

    def __init__(self, **app_kwargs):
        super().__init__(make_app, **app_kwargs)

    @property
    def base_url(self) -> str:
        return self.root + "/v1" if self.root else ""

    @property
    def stats(self) -> dict:
        """Live counters: requests, completions, max_in_flight, busy_s, first_start, last_end."""
        return self.app[_STATS]


@contextmanager
def endpoint_process(latency: tuple[float, float] = (0.2, 0.3), max_concurrency: int = 64,
                     logprobs: bool = True, fault_rate: float = 0.0, fault_seed: int = 0,
                     hang_s: float = 3.0, grade: bool = False, processes: int = 1):
    """Start the endpoint in a separate process (so its CPU is not the client's) and yield
    its base URL; the process is terminated on exit. ``processes`` > 1 serves the port from that
    many processes (for clients that need more than one core of endpoint); ``max_concurrency`` and
    ``/stats`` are then each process's own."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "benchmarks.fake_endpoint", "--latency", f"{latency[0]},{latency[1]}",
           "--max-concurrency", str(max_concurrency)]
    if not logprobs:
        cmd.append("--no-logprobs")
    if fault_rate:
        cmd += ["--fault-rate", str(fault_rate), "--fault-seed", str(fault_seed), "--hang-s", str(hang_s)]
    if grade:
        cmd.append("--grade")
    if processes > 1:
        cmd += ["--processes", str(processes)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=str(root),
                            start_new_session=processes > 1)
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"fake endpoint failed to start: {line!r}")
        yield line.split(" ", 1)[1]
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        if processes > 1:  # (its children, should the parent have been killed before it could stop them)
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)


def fetch_stats(base_url: str) -> dict:
    """``GET /stats`` of a running endpoint (blocking, stdlib only)."""
    import urllib.request

    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(root + "/stats", timeout=10) as r:
        return json.loads(r.read())


def fetch_answers(base_url: str) -> dict:
    """``GET /answers`` (fault mode): every answer text sent, by prompt."""
    import urllib.request

    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(root + "/answers", timeout=60) as r:
        return json.loads(r.read())


def reset_stats(base_url: str) -> None:
    """Zero the counters of a running endpoint."""
    import urllib.request

    root = base_url.rsplit("/v1", 1)[0]
    urllib.request.urlopen(urllib.request.Request(root + "/stats/reset", method="POST"), timeout=10).read()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", default="0.2,0.3", help="'lo,hi' seconds, or '0'")
    ap.add_argument("--max-concurrency", type=int, default=64)
    ap.add_argument("--no-logprobs", action="store_true")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    ap.add_argument("--grade", action="store_true", help="answer judge prompts with a parseable Score: N")
    ap.add_argument("--fault-rate", type=float, default=0.0, help="share of attempts that fail (fault mode)")
    ap.add_argument("--fault-seed", type=int, default=0)
    ap.add_argument("--hang-s", type=float, default=3.0, help="how long a 'hang' fault sleeps")
    ap.add_argument("--processes", type=int, default=1,
                    help="serve the port from this many processes (SO_REUSEPORT); each has its own limit and stats")
    args = ap.parse_args(argv)
    parts = [float(x) for x in args.latency.split(",")]
    latency = (parts[0], parts[-1])
    first = _free_socket(args.port, reuse_port=args.processes > 1)
    port = first.getsockname()[1]
    socks = [first, *(_free_socket(port, reuse_port=True) for _ in range(args.processes - 1))]
    children: list[int] = []
    mine = socks[0]
    for sock in socks[1:]:  # forked before any event loop exists; each child serves its own socket
        pid = os.fork()
        if pid == 0:
            children.clear()
            mine = sock
            break
        children.append(pid)
    for sock in socks:
        if sock is not mine:
            sock.close()

    def stop(*_) -> None:  # the parent takes its children down with it
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        os._exit(0)

    if children:
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    async def serve() -> None:
        app = make_app(args.max_concurrency, latency, not args.no_logprobs, fault_rate=args.fault_rate,
                       fault_seed=args.fault_seed, hang_s=args.hang_s, grade=args.grade)
        await _start(app, mine)
        if mine is first:
            print(f"LISTENING http://127.0.0.1:{port}/v1", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    finally:
        if children:
            stop()


if __name__ == "__main__":
    main()
