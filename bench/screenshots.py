"""Screenshots of what users see, taken with headless Chromium (Debian's `chromium`, driven by Playwright):
the Prefect UI's runs list, the decision form of a declaration waiting for an official, the automations page,
and the intake API's documentation page (served without internet).

Starts `customs serve` on a data directory of its own (its own Prefect server and ports), submits a few
declarations through the API (green ones, and one with unpaid VAT that waits for an official), and writes
PNG files to bench/screenshots/.

    python bench/screenshots.py [--out bench/screenshots]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CUSTOMS = str(Path(sys.executable).with_name("customs"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def declaration(name: str) -> bytes:
    document = json.loads((ROOT / "samples" / name).read_text(encoding="utf-8"))
    document["documents"][0]["number"] = f"INV-{uuid.uuid4().hex[:10]}"
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    from customs.core.clock import utcnow
    from customs.pki.testing import CmsSigner, TestPki

    work = Path(tempfile.mkdtemp(prefix="screenshots-"))
    pki = TestPki.create(work / "pki", now=utcnow() - timedelta(hours=1))
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin="050840001233", label="company")
    signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "CUSTOMS_"))}
    env.update(
        CUSTOMS_DATA_DIR=str(work / "data"),
        CUSTOMS_PREFECT_PORT=str(free_port()),
        CUSTOMS_API_PORT=str(free_port()),
        CUSTOMS_TRUST_DIR=str(pki.trust_dir),
        CUSTOMS_CRL_DIR=str(pki.crl_dir),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    api = f"http://127.0.0.1:{env['CUSTOMS_API_PORT']}"
    prefect = f"http://127.0.0.1:{env['CUSTOMS_PREFECT_PORT']}"
    log = open(work / "serve.log", "wb")
    serve = subprocess.Popen([CUSTOMS, "serve"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(f"{api}/v1/health", timeout=2).status_code == 200, "customs serve", 240)
        login = (work / "data" / "prefect-auth").read_text().strip()  # the Prefect server's (issue 23)
        added = subprocess.run(
            [CUSTOMS, "clients", "add", "alatau", "--kind", "declarant", "--id", "050840001233"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        token = next(line.split()[-1] for line in added.stdout.splitlines() if line.startswith("token:"))
        headers = {"Authorization": f"Bearer {token}"}
        waiting = None
        for name in ["01-green-household-appliances.json"] * 3 + ["03-unpaid-vat.json"]:
            content = declaration(name)
            answer = httpx.post(
                f"{api}/v1/declarations",
                headers=headers,
                timeout=30,
                files={"declaration": ("d.json", content), "signature": ("d.p7s", signer.sign(content))},
            ).json()
            waiting = answer["application_id"]

        def suspended_run():
            runs = httpx.post(
                f"{prefect}/api/flow_runs/filter",
                json={"flow_runs": {"tags": {"all_": [f"application:{waiting}"]}}},
                timeout=10,
                auth=tuple(login.split(":", 1)),
            ).json()
            return next((r for r in runs if r["state"]["name"] == "Suspended"), None)

        run = wait_until(suspended_run, "the declaration with unpaid VAT to wait for an official", 180)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            # what the UI's login page stores once ops staff typed the line of data/prefect-auth
            page.add_init_script(
                f"localStorage.setItem('prefect-password', {json.dumps(base64.b64encode(login.encode()).decode())})"
            )
            page.goto(f"{prefect}/runs", wait_until="networkidle")
            page.wait_for_timeout(2000)
            page.screenshot(path=str(args.out / "runs-list.png"))
            page.goto(f"{prefect}/runs/flow-run/{run['id']}", wait_until="networkidle")
            page.wait_for_timeout(2500)  # a waiting run: no decision form (officials decide with a signed act)
            page.screenshot(path=str(args.out / "waiting-run.png"), full_page=True)
            page.goto(f"{prefect}/automations", wait_until="networkidle")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(args.out / "automations.png"))
            page.goto(f"{api}/docs", wait_until="networkidle")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(args.out / "api-docs.png"))
            browser.close()
        for png in sorted(args.out.glob("*.png")):
            print(f"{png.relative_to(ROOT)}: {png.stat().st_size:,} bytes")
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
        subprocess.run([CUSTOMS, "server", "stop"], env=env, cwd=ROOT, capture_output=True, timeout=120)
        log.close()


if __name__ == "__main__":
    main()
