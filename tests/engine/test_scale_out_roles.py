"""benchmarks/scale_out_roles.py reads each thread's CPU from /proc: the parts that do not need a cluster."""

import os
import threading
import time

from benchmarks.scale_out_roles import _delta, _fmt, snapshot


def test_snapshot_counts_a_busy_thread_and_the_whole_process():
    me = os.getpid()
    before = snapshot([me])
    assert (me, me) in before and (me, "all") in before
    tids: list[int] = []
    seen = threading.Event()

    def spin():
        # Spins until the main thread has taken its snapshot, and for at least 0.3 s of CPU: on a
        # loaded 2-core machine the snapshot's reads can outlast a fixed 0.3 s, and a thread that
        # has ended has no /proc entry (CI failed once that way).
        tids.append(threading.get_native_id())
        end = time.thread_time() + 0.3
        while time.thread_time() < end or not seen.is_set():
            pass

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        while not tids:
            time.sleep(0.001)
        mid = snapshot([me])  # the thread is running: it has its own entry
    finally:
        seen.set()
    t.join()
    assert (me, tids[0]) in mid
    got: dict = {}
    _delta(before, snapshot([me]), got)
    spent = got[(me, "all")]
    assert spent.real + spent.imag >= 0.25  # the ended thread's CPU stays in the process's total
    assert got[(me, me)].real + got[(me, me)].imag < spent.real + spent.imag


def test_fmt_gives_per_thousand_records_and_the_total():
    line = _fmt({"main": complex(0.6, 0.2), "other": complex(0.2, 0.0)}, 2000)
    assert line == "main 0.300+0.100, other 0.100+0.000 | total 0.500"
