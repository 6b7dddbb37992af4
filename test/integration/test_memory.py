"""Big results stream through the pooler: its memory does not grow with the result's size.

The result of BIG_QUERY is about 100 MB on the wire. A pooler that buffered it would grow by
that much; a relaying one stays at its fixed per-connection buffers. Under the sanitizers the
resident size starts higher (shadow memory), so there the limit applies to the growth.
"""

import resource
import time

import pytest

from conftest import SANITIZED, RssSampler
from pgwire import WireClient

BIG_QUERY = "select repeat('x', 1000) from generate_series(1, 100000)"
LIMIT_KB = 50 * 1024


def check_rss(baseline_kb, peak_kb):
    if SANITIZED:
        assert peak_kb - baseline_kb < LIMIT_KB, f"RSS grew from {baseline_kb} to {peak_kb} kB"
    else:
        assert peak_kb < LIMIT_KB, f"RSS reached {peak_kb} kB (started at {baseline_kb} kB)"


@pytest.mark.timeout(180)
def test_100mb_result_streams_with_bounded_memory(bouncer):
    bouncer.psql("-c", "select 1")
    baseline = bouncer.rss_kb()
    with RssSampler(bouncer) as sampler:
        res = bouncer.psql("-o", "/dev/null", "-c", BIG_QUERY)
    assert res.returncode == 0
    assert sampler.samples > 5
    check_rss(baseline, sampler.peak_kb)
    # The whole result arrived: count what psql prints.
    res = bouncer.psql("-At", "-c", f"select count(*), sum(length(r)) from ({BIG_QUERY}) s(r)")
    assert res.stdout == "100000|100000000\n"


@pytest.mark.timeout(180)
def test_100mb_result_byte_count(bouncer):
    """A raw client receives every DataRow of the 100 MB result intact."""
    w = bouncer.wire()
    assert w.startup("app", "app", "secret") is None
    w.query(BIG_QUERY)
    rows = total = 0
    while True:
        kind, body = w.read_msg()
        if kind == "D":
            rows += 1
            total += len(body)
            assert body[6:] == b"x" * 1000
        elif kind == "E":
            pytest.fail(f"error: {body!r}")
        elif kind == "Z":
            break
    w.close()
    assert rows == 100000
    assert total == 100000 * (2 + 4 + 1000)


@pytest.mark.timeout(180)
def test_slow_reader_does_not_grow_memory(bouncer, pg):
    """A client that stops reading holds the server back instead of filling the pooler."""
    w = bouncer.wire(rcvbuf=4096, timeout=30)
    assert w.startup("app", "app", "secret") is None
    baseline = bouncer.rss_kb()
    with RssSampler(bouncer) as sampler:
        w.query(BIG_QUERY)
        # Stalled: the backpressure reaches PostgreSQL, whose backend waits to write to the
        # pooler (a pooler that buffers would read on, and the backend would finish instead).
        waits_sql = ("select wait_event from pg_stat_activity"
                     f" where query = '{BIG_QUERY.replace(chr(39), chr(39) * 2)}'")
        deadline = time.monotonic() + 30
        while (waits := pg.sql(waits_sql)) != [("ClientWrite",)]:
            assert time.monotonic() < deadline, waits
            time.sleep(0.05)
        # Another client is served meanwhile.
        with bouncer.connect() as conn:
            assert conn.execute("select 'other'").fetchone() == ("other",)
        # Trickle: read 64 kB every 20 ms for a while.
        got = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            got += w.recv_some(65536)
            time.sleep(0.02)
        stalled_peak = sampler.peak_kb
    check_rss(baseline, stalled_peak)
    assert 0 < got < 50 * 1024 * 1024
    # Then drain at full speed; the answer is complete and correct.
    rows = 0
    while True:
        kind, body = w.read_msg()
        if kind == "D":
            rows += 1
        elif kind == "E":
            pytest.fail(f"error: {body!r}")
        elif kind == "Z":
            break
    w.close()
    assert rows == 100000
    check_rss(baseline, bouncer.rss_kb())


@pytest.mark.timeout(300)
def test_idle_clients_hold_no_receive_buffer(bouncer_factory):
    """A thousand logged-in clients that send nothing cost a few kB each, not a receive buffer
    (pkt_buf) each; every one of them is still answered when it speaks again."""
    n = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n + 200, hard), hard))
    b = bouncer_factory(config={"pgbouncer": {"max_client_conn": n + 50,
                                              "pool_mode": "transaction"}})
    first = WireClient(b.host, b.port)
    assert first.startup("app", "app", password="secret") is None
    first.query("select 1")
    assert first.read_until_ready() == ([["1"]], None)
    baseline = b.rss_kb()
    clients = []
    try:
        for _ in range(n):
            c = WireClient(b.host, b.port)
            clients.append(c)
            assert c.startup("app", "app", password="secret") is None
        per_client = (b.rss_kb() - baseline) * 1024 / n
        # holding a 4 kB buffer each took about 7.3 kB a client (3.2 kB without; pgbouncer
        # 1.0 kB); under the sanitizers (redzones, their allocator) 6.5 kB without
        limit = 8500 if SANITIZED else 5500
        assert per_client < limit, f"{per_client:.0f} bytes per idle client"
        for i, c in enumerate(clients[::50]):
            c.query(f"select {i}")
            assert c.read_until_ready() == ([[str(i)]], None)
    finally:
        for c in clients:
            c.close()
        first.close()
