"""The fixtures themselves: a pooler that crashes or reports a sanitizer error fails its test.

A stand-in pooler (a Python script) listens like the real one and misbehaves on SIGTERM in
the ways the sanitizer build would; Bouncer.stop() must report each one.
"""

import stat
import sys

import pytest

FAKE = r"""#!PYTHON
import os, signal, socket, sys, time
mode = os.environ["SB_FAKE_MODE"]
ini = sys.argv[-1]
port = int(next(l.split("=")[1] for l in open(ini) if l.startswith("listen_port")))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen()
def on_term(*_):
    if mode == "asan":
        sys.stderr.write("==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n")
        sys.stderr.flush()
        os._exit(1)
    if mode == "ubsan":
        sys.stderr.write("src/x.c:1:2: runtime error: signed integer overflow\n")
        sys.stderr.flush()
        os._exit(0)
    if mode == "segv":
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
# as the real one, once its start is done (the harness waits for this line)
print("2024-01-01 00:00:00.000 UTC [%d] LOG process up: fakebouncer" % os.getpid(), flush=True)
if mode == "dies":
    time.sleep(0.5)
    os._exit(3)
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("mode,expect", [
    ("clean", None),
    ("asan", "sanitizer report"),
    ("ubsan", "sanitizer report"),
    ("segv", "killed by signal 11"),
    ("dies", "pooler died during the test"),
])
def test_stop_reports_crashes_and_sanitizer_reports(bouncer_factory, tmp_path, monkeypatch,
                                                    mode, expect):
    fake = tmp_path / "fakebouncer"
    fake.write_text(FAKE.replace("PYTHON", sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("SB_FAKE_MODE", mode)
    b = bouncer_factory(start=False)
    b.binary = str(fake)
    b.start()
    if mode == "dies":
        b.proc.wait(timeout=10)
    problems = b.stop()
    if expect is None:
        assert problems == []
    else:
        assert any(expect in p for p in problems), problems
