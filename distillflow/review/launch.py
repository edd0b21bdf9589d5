"""Start argilla-server 2.8.0 with the osmem adapter (runs INSIDE the server's venv, by path).

    python launch.py serve --host 127.0.0.1 --port 6900

``serve`` does, in one process (one slow import instead of four): migrate the database, create
the default user if missing, rebuild the search index from the database (osmem keeps it in memory
only, so a restart starts empty), then run the server. It imports nothing from distillflow.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from pathlib import Path


def _load_adapter() -> None:
    path = Path(__file__).with_name("osmem_adapter.py")
    spec = importlib.util.spec_from_file_location("distillflow_osmem_adapter", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


def _migrate() -> None:
    import alembic.config
    from argilla_server.database import ALEMBIC_CONFIG_FILE

    alembic.config.main(argv=["-c", ALEMBIC_CONFIG_FILE, "upgrade", "head"])


def _create_default_user() -> None:
    from argilla_server.cli.database.users.create_default import _create_default
    from argilla_server.constants import DEFAULT_API_KEY, DEFAULT_PASSWORD

    asyncio.run(_create_default(DEFAULT_API_KEY, DEFAULT_PASSWORD, quiet=True))


async def _reindex() -> int:
    from argilla_server.cli.search_engine.reindex import Reindexer
    from argilla_server.database import AsyncSessionLocal
    from argilla_server.search_engine import get_search_engine

    n = 0
    async with AsyncSessionLocal() as db:
        async for engine in get_search_engine():
            async for dataset in Reindexer.reindex_datasets(db, engine):
                async for records in Reindexer.reindex_dataset_records(db, engine, dataset):
                    n += len(records)
    return n


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="launch.py")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6900)
    args = parser.parse_args(argv)

    _load_adapter()
    _migrate()
    _create_default_user()
    n = asyncio.run(_reindex())
    print(f"distillflow: reindexed {n} records", flush=True)

    import uvicorn

    uvicorn.run("argilla_server:app", host=args.host, port=args.port, access_log=False)


if __name__ == "__main__":
    main()
