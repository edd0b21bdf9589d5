"""The answer cache on a really full disk (a small tmpfs): no traceback from its timer callback,
the error raised by the next call, the reserve making room for what was received."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from distillflow.engine.cache import RequestCache
from distillflow.engine.client import ChatResult
from distillflow.errors import OutputWriteError
from tests.support import small_disk

pytestmark = pytest.mark.timeout(60)


def _answer(i: int) -> ChatResult:
    return ChatResult(f"k{i:05d}", "answer " + "x" * 1500 + str(i), 10, 20, None, "stop", None, 0.1)


def _fill(disk, leave: int) -> None:
    (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - leave))


def test_a_failed_background_commit_prints_nothing_and_the_next_call_raises(tmp_path):
    with small_disk(tmp_path / "disk", "1m") as disk:
        callback_errors = []

        async def main():
            asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: callback_errors.append(ctx))
            cache = RequestCache(disk / "c" / "requests.sqlite", flush_every=10**6, flush_interval_s=0.01,
                                 reserve_bytes=0)
            _fill(disk, 48 * 1024)
            put = 0
            with pytest.raises(OutputWriteError) as info:
                for i in range(10**4):
                    cache.put(_answer(i))  # buffered; the loop's timer commits them
                    put += 1
                    await asyncio.sleep(0.012)  # lets the timer fire between puts
            return cache, put, info.value

        cache, put, err = asyncio.run(main())
        assert callback_errors == []  # the timer's failure printed no "Exception in callback" traceback
        msg = str(err)
        assert msg.startswith(f"cannot write the answer cache {disk / 'c' / 'requests.sqlite'} (database or disk is full)")
        assert "could not be written" in msg and "run the same command again to resume" in msg
        assert len(cache._pending) == put + 1 - _count_ro(disk / "c" / "requests.sqlite")
        (disk / "filler").unlink()
        cache.close()  # space is back: the buffered answers are committed on close
        assert _count_ro(disk / "c" / "requests.sqlite") == put + 1


def test_the_reserve_makes_room_for_every_received_answer(tmp_path):
    with small_disk(tmp_path / "disk", "3m") as disk:
        cache = RequestCache(disk / "requests.sqlite", flush_every=5, reserve_bytes=1 << 20)
        assert (disk / "requests.sqlite.reserve").stat().st_size == 1 << 20
        _fill(disk, 32 * 1024)
        n = 0
        with pytest.raises(OutputWriteError) as info:
            for n in range(1, 10**4):
                cache.put(_answer(n))
        assert "(every answer received is stored)" in str(info.value)
        assert not (disk / "requests.sqlite.reserve").exists()
        assert _count_ro(disk / "requests.sqlite") == n
        cache.close()  # told once; nothing is pending, so closing is quiet
        assert _count_ro(disk / "requests.sqlite") == n
        (disk / "filler").unlink()
        # The next run (space freed) sets a new reserve aside.
        RequestCache(disk / "requests.sqlite").close()
        assert (disk / "requests.sqlite.reserve").stat().st_size == 1 << 20


def _count_ro(db) -> int:
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    finally:
        con.close()
