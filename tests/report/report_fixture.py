"""A real run directory for report tests, plus stand-in files of the later stages.

The run is real (`distillflow.run`: inline prompts, two teachers on the fake endpoint, a verifier,
a judge, a filter). The review, training and evaluation outputs are written here in the shapes
those integrations write (review/report.json, train/dataset.jsonl + trainer_state.json,
eval/results.json), so the report can be tested without Argilla, Axolotl or models.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

QA = [("Repeat: apple", "apple"), ("What is 2+2?", "4"), ("Repeat: pear", "pear"), ("What is 3+3?", "6"),
      ("Repeat: plum", "plum"), ("Name a colour", "red"), ("Repeat: fig", "fig"), ("What is 5+5?", "10"),
      ("Repeat: kiwi", "kiwi"), ("Capital of France?", "Paris"), ("Repeat: lime", "lime"), ("What is 1+1?", "2")]

LOSS = [2.9, 2.4, 1.9, 1.6, 1.3, 1.1, 0.95, 0.84]


class LengthJudge:
    """An OpenAI-compatible judge that scores by the judged response's length: 1 + len % 5."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"]
                response = content.split("<response>\n", 1)[-1].split("\n</response>", 1)[0]
                text = f"Rationale: fine.\nScore: {1 + len(response) % 5}"
                data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "judge",
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 50, "completion_tokens": 6, "total_tokens": 56}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def build_run(root: Path, teacher_url: str, judge_url: str) -> Path:
    import distillflow as df

    rows = "".join(f'\n    - {{question: "{q}", answer: "{a}"}}' for q, a in QA)
    text = f"""name: report-demo
source:
  kind: inline
  columns: {{prompt: question, reference: answer}}
  rows:{rows}
  heldout: {{size: 4, seed: 0}}
teachers:
  - {{name: alpha, provider: openai, base_url: "{teacher_url}", model: alpha-model,
      params: {{max_tokens: 16}}, price: {{input_per_1m: 1.0, output_per_1m: 4.0}}}}
  - {{name: beta, provider: openai, base_url: "{teacher_url}", model: beta-model,
      params: {{max_tokens: 16}}, price: {{input_per_1m: 3.0, output_per_1m: 15.0}}}}
  - {{name: referee, provider: openai, base_url: "{judge_url}", model: judge}}
steps:
  - kind: generate
    teachers: [alpha, beta]
    num_generations: 2
  - {{id: check, kind: verify, check: contains, reference: reference}}
  - {{id: quality, kind: judge, teacher: referee}}
  - {{id: keep, kind: filter, where: "check_pass"}}
"""
    (root / "pipeline.yaml").write_text(text)
    df.run(df.load(root / "pipeline.yaml"), out=root / "run", progress=False)
    return root / "run"


def add_later_stages(run: Path, *, agreement_file: bool = False) -> None:
    """Stand-ins for review pull, distillflow train and distillflow eval outputs."""
    review = run / "review"
    review.mkdir(exist_ok=True)
    agreement = {
        "judge_vs_human": {"n": 4, "agreement": 0.75, "kappa": 0.5, "judge_precision": 0.6667, "judge_recall": 1.0},
        "between_reviewers": {"records": 2, "comparisons": 2, "agreement": 0.5, "kappa": 0.0},
    }
    if agreement_file:
        (review / "agreement.json").write_text(json.dumps(agreement))
    else:
        (review / "report.json").write_text(json.dumps({"counts": {"accepted": 3, "rejected": 1}, "agreement": agreement}))

    train = run / "train"
    (train / "output").mkdir(parents=True, exist_ok=True)
    (train / "dataset.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "messages": []}) + "\n" for i in range(3)))
    history = [{"step": i + 1, "epoch": (i + 1) / 8, "loss": v} for i, v in enumerate(LOSS)]
    history.append({"step": 8, "epoch": 1.0, "eval_loss": 1.02})
    (train / "output" / "trainer_state.json").write_text(json.dumps({"global_step": 8, "log_history": history}))

    (run / "eval").mkdir(exist_ok=True)
    results = {
        "version": 1, "prompts": 4, "heldout": 4,
        "models": {"base": {"label": "base student", "path": "/models/student-base", "seconds": 1.5},
                   "student": {"label": "trained student", "path": str(train / "output"), "seconds": 1.4},
                   "teacher": {"label": "teacher", "name": "alpha", "model": "alpha-model", "seconds": 0.2}},
        "metrics": [
            {"id": "verifier", "label": "verifier pass rate (check: contains)", "kind": "rate", "scale": [0, 1],
             "values": {"base": 0.1, "student": 0.45, "teacher": 0.9}, "retention": 0.5, "base_retention": 0.1111},
            {"id": "judge", "label": "judge score (helpfulness, by referee)", "kind": "score", "scale": [1, 5],
             "values": {"base": 2.0, "student": 3.5, "teacher": 4.0}, "retention": 0.875, "base_retention": 0.5},
        ],
        "lm_eval": {"status": "skipped", "reason": "no eval.lm_eval_tasks", "tasks": {}, "errors": {}},
        "notes": [],
    }
    (run / "eval" / "results.json").write_text(json.dumps(results))


def expected_funnel(run: Path) -> dict:
    """Funnel numbers known from the inputs: 12 prompts - 4 held out, 2 teachers x 2 samples, and the
    fake teacher ("Answer: <prompt>") passes `contains` exactly when the prompt holds the answer."""
    held = {json.loads(line)["prompt"] for line in (run / "data" / "heldout.jsonl").read_text().splitlines()}
    used = [(q, a) for q, a in QA if q not in held]
    passing = sum(a.casefold() in f"Answer: {q}".casefold() for q, a in used)
    return {"prompts": len(used), "generations": 4 * len(used), "judged": 4 * len(used), "kept": 4 * passing}
