"""Intake under a burst and under slow senders (issue 25): the API server's memory, and how long a fast
submission waits while slow senders trickle.

The intake API runs in a child process under the uvicorn server `customs serve` builds (SQLite in a temporary
folder); this process sends to it and samples the child's RSS (/proc/<pid>/status) every 20 ms.

1. Burst: N submissions of about 53 MB at once (two 19.5 MiB attachments in base64, junk signatures, as the
   attack probe sent), from one client (its share refuses all but api_client_concurrent_submissions: 429) and
   then spread over four clients (all accepted). RSS before, at its peak, and 3 s after each.
2. Slow senders: 4 connections of one declarant sending 1 byte every 2 s, then a portal submission: how long
   it waited, and when the slow ones were cut (408).

    python bench/intake_burst.py [-n 16] [--no-trim] [--arenas]
    (--no-trim: without malloc_trim; --arenas: with glibc's heap per thread; to compare)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def serve(data: str, port: int, trim: bool) -> None:
    """The child: the intake API on ``port``."""
    import customs.api.bodies
    from customs.api import create_app
    from customs.cli.serve import intake_server
    from customs.core.settings import Settings, configure

    if not trim:
        customs.api.bodies._malloc_trim = None
    settings = Settings(data_dir=Path(data), api_port=port)
    configure(settings)
    intake_server(create_app(), settings).run()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.02)


def body(size_mib: float) -> bytes:
    document = json.loads((ROOT / "samples" / "01-green-household-appliances.json").read_text(encoding="utf-8"))
    document["documents"][0]["number"] = f"INV-{uuid.uuid4().hex[:10]}"
    content = json.dumps(document, ensure_ascii=False).encode()
    part = int(size_mib * 1024 * 1024 / 2)
    junk = base64.b64encode(b"not a signature").decode()
    attachments = [
        {"filename": f"scan-{i}.bin", "content": base64.b64encode(os.urandom(part)).decode(), "signature": junk} for i in range(2)
    ]
    envelope = {"declaration": base64.b64encode(content).decode(), "signature": junk, "attachments": attachments}
    return json.dumps(envelope).encode()


def burst(port: int, pid: int, tokens: list[str], n: int) -> dict:
    import httpx

    statuses: list[int] = []
    bodies = [body(39) for _ in range(n)]  # made before, so the child's RSS is what is measured
    before = rss_mib(pid)
    sampler = Sampler(pid)
    sampler.start()

    def send(index: int) -> None:
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/declarations",
            content=bodies[index],
            headers={"Authorization": f"Bearer {tokens[index % len(tokens)]}", "Content-Type": "application/json"},
            timeout=600,
        )
        statuses.append(answer.status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    time.sleep(3)
    sampler.running = False
    sampler.join()
    return {
        "body_mb": round(len(bodies[0]) / 1e6, 1),
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
        "seconds": round(seconds, 1),
        "rss_before_mib": round(before),
        "rss_peak_mib": round(sampler.peak),
        "rss_after_mib": round(rss_mib(pid)),
    }


def slow_senders(port: int, declarant: str, portal: str) -> dict:
    import httpx

    cut: list[float] = []
    started = time.monotonic()

    def slow() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.sendall(
                f"POST /v1/declarations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {declarant}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
            )
            try:
                for _ in range(1000):
                    sock.sendall(b" ")
                    sock.settimeout(2)
                    try:
                        if sock.recv(65536):
                            break
                    except TimeoutError:
                        continue
            except OSError:
                pass
            cut.append(time.monotonic() - started)

    threads = [threading.Thread(target=slow) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    sent = time.monotonic()
    answer = httpx.post(
        f"http://127.0.0.1:{port}/v1/declarations",
        content=body(0.05),
        headers={"Authorization": f"Bearer {portal}", "Content-Type": "application/json"},
        timeout=600,
    )
    waited = time.monotonic() - sent
    for thread in threads:
        thread.join()
    cut_after = sorted(round(c, 1) for c in cut)
    return {"fast_status": answer.status_code, "fast_waited_s": round(waited, 2), "slow_cut_after_s": cut_after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=16, help="submissions in the burst")
    parser.add_argument("--no-trim", action="store_true", help="without malloc_trim (to compare)")
    parser.add_argument("--arenas", action="store_true", help="glibc's default heaps, one per thread (to compare)")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), not args.no_trim)
        return

    from customs.core.db import init_db
    from customs.core.settings import Settings, configure
    from customs.services.clients import create_client

    data = tempfile.mkdtemp(prefix="customs-bench-intake-")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(data_dir=Path(data), api_port=port)
    configure(settings)
    init_db(settings)
    portals = [create_client(f"portal-{i}", "portal", (), None)[1] for i in range(4)]
    declarant = create_client("declarant-slow", "declarant", ("050840001233",), None)[1]
    command = [sys.executable, __file__, "--serve", data, str(port)] + (["--no-trim"] if args.no_trim else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.arenas:  # few_malloc_arenas() leaves an operator's MALLOC_ARENA_MAX alone: 64 is glibc's own ceiling here
        env["MALLOC_ARENA_MAX"] = "64"
    child = subprocess.Popen(command, env=env)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        print(f"malloc_trim: {'off' if args.no_trim else 'on'}; heaps: {'one per thread' if args.arenas else 'two'}")
        print("burst, one client:  ", json.dumps(burst(port, child.pid, portals[:1], args.n)))
        print("burst, four clients:", json.dumps(burst(port, child.pid, portals, args.n)))
        print("again, four clients:", json.dumps(burst(port, child.pid, portals, args.n)))  # no growth from burst to burst
        print("4 slow senders:     ", json.dumps(slow_senders(port, declarant, portals[1])))
    finally:
        child.terminate()
        child.wait(30)


if __name__ == "__main__":
    main()
