"""Child process of the kill -9 test: submit a batch through answer_batch and wait on it forever
(the server holds it); the test kills this process once the store shows the batch submitted."""

import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from distillflow.engine.batch import BatchStore, answer_batch  # noqa: E402
from distillflow.spec.models import TeacherSpec  # noqa: E402
from tests.engine.batch_support import requests  # noqa: E402

teacher = TeacherSpec.model_validate(json.loads(sys.argv[1]))
prompts = json.loads(sys.argv[2])
store = BatchStore(sys.argv[3])
os.environ.setdefault("DF_TEST_ANTHROPIC_KEY", "test-key")
asyncio.run(answer_batch(teacher, requests(prompts), store=store, on_result=lambda r: None))
print("returned", flush=True)  # never reached: the batch is held until the process is killed
