"""Issue 23, part 1: the Prefect server and UI behind a login, and the service's files its user's alone.

A real `customs serve` (the `served` fixture of test_serve.py: its own data directory, Prefect server and ports):
every path of the Prefect API the UI uses answers 401 without the login and with a wrong one, and works with the
one kept in data_dir/prefect-auth; the CLI and the served worker clear declarations against it. The refusal of a
server open to the network with no login, and the login's settings, without a server.
"""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, as_bytes, sample, unique, wait_until
from tests.orchestration.test_serve import CUSTOMS, declarant_client, served  # noqa: F401  (the fixture)

# Every path of Prefect's API the UI (v1 and v2) calls, with the method it uses. {id} is a random UUID: with the login
# the answer is the route's own (404/409/422), never 401.
UI_PATHS = [
    ("POST", "/flow_runs/filter"),
    ("POST", "/flow_runs/count"),
    ("GET", "/flow_runs/{id}"),
    ("POST", "/flow_runs/{id}/resume"),
    ("POST", "/flow_runs/{id}/set_state"),
    ("POST", "/flow_runs/{id}/input/filter"),
    ("DELETE", "/flow_runs/{id}"),
    ("POST", "/task_runs/filter"),
    ("POST", "/flows/filter"),
    ("POST", "/deployments/filter"),
    ("GET", "/deployments/{id}"),
    ("POST", "/deployments/{id}/create_flow_run"),
    ("POST", "/block_documents/filter"),
    ("GET", "/block_documents/{id}"),
    ("POST", "/block_types/filter"),
    ("POST", "/artifacts/filter"),
    ("POST", "/artifacts/latest/filter"),
    ("POST", "/logs/filter"),
    ("POST", "/work_pools/filter"),
    ("POST", "/work_pools/customs/workers/filter"),
    ("POST", "/work_queues/filter"),
    ("POST", "/automations/filter"),
    ("POST", "/events/filter"),
    ("POST", "/variables/filter"),
    ("POST", "/saved_searches/filter"),
    ("POST", "/concurrency_limits/filter"),
    ("GET", "/admin/settings"),
    ("GET", "/admin/version"),
    ("GET", "/version"),
    ("GET", "/csrf-token?client=ui"),
    ("POST", "/ui/flow_runs/history"),
    ("POST", "/ui/flows/count-deployments"),
    ("POST", "/ui/task_runs/dashboard/counts"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
]


def _call(prefect: str, method: str, path: str, auth=None) -> int:
    url = prefect + path.format(id=uuid.uuid4())
    body = {} if method == "POST" else None
    return httpx.request(method, url, json=body, auth=auth, timeout=20).status_code


def _websocket(url: str, token: str | None) -> str:
    """What Prefect's websocket at ``url`` answers: ``auth_success``, or ``closed``."""
    import json

    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(url, subprotocols=["prefect"] if token else None, open_timeout=10) as socket:
            if token is None:
                socket.recv(timeout=10)  # a client of the old protocol, with no login: never accepted
            socket.send(json.dumps({"type": "auth", "token": token}))
            return json.loads(socket.recv(timeout=10))["type"]
    except (ConnectionClosed, InvalidStatus):  # closed after the handshake, or refused in it (403)
        return "closed"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_served_prefect_api_demands_the_login_and_the_clients_present_it(served, company_signer):  # noqa: F811
    env, prefect, login = served["env"], served["prefect"], served["login"]
    data = Path(env["CUSTOMS_DATA_DIR"])
    # The generated login: customs:<32 random url-safe characters>, kept 0600.
    assert login[0] == "customs" and len(login[1]) == 32
    # Before anything: no login and a wrong one get 401 on every path the UI uses; the right one never does.
    for method, path in UI_PATHS:
        assert _call(prefect, method, path) == 401, (method, path)
        assert _call(prefect, method, path, auth=(login[0], login[1][:-1] + "x")) == 401, (method, path)
        assert _call(prefect, method, path, auth=("admin", login[1])) == 401, (method, path)
        assert _call(prefect, method, path, auth=login) != 401, (method, path)
    # What stays open: the health probes (load balancers, the project's own is_healthy) and the UI's files and its
    # settings (which say only that the API wants a login); the UI then asks for it.
    for path in ("/health", "/ready"):
        assert httpx.get(prefect + path, timeout=10).status_code == 200
    ui = prefect.removesuffix("/api")
    assert httpx.get(f"{ui}/ui-settings", timeout=10).json()["auth"] == "BASIC"
    assert httpx.get(f"{ui}/", timeout=10).status_code == 200
    # The websockets (the UI's and the clients' event and log streams) refuse a client that does not log in first.
    events = prefect.replace("http://", "ws://") + "/events/out"
    assert _websocket(events, None) == "closed"
    assert _websocket(events, "customs:not-the-password") == "closed"
    assert _websocket(events, ":".join(login)) == "auth_success"
    # The ops alert token of the automations' webhook block: readable with the login only.
    blocks = f"{prefect}/block_documents/filter"
    secret = {"include_secrets": True}
    assert httpx.post(blocks, json=secret, timeout=10).status_code == 401
    documents = httpx.post(blocks, json=secret, auth=login, timeout=10).json()
    assert any(d["name"] == "customs-ops-alerts" for d in documents)

    # The CLI clears a declaration in its own process, recording the run in the authenticated server.
    content = as_bytes(unique(sample()))
    declaration, signature = data.parent / "d.json", data.parent / "d.json.p7s"
    declaration.write_bytes(content)
    signature.write_bytes(company_signer.sign(content))
    submitted = subprocess.run(
        [CUSTOMS, "submit", str(declaration), "--signature", str(signature), "--wait", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr[-3000:]
    assert '"status": "released"' in submitted.stdout
    assert "no login" not in submitted.stderr  # the CLI found the server's login; no warning
    by_cli = submitted.stdout.split('"application_id": "')[1].split('"')[0]

    # The served worker clears one submitted through the intake API.
    headers = declarant_client(env, "alatau")
    content = as_bytes(unique(sample()))
    response = httpx.post(
        f"{served['api']}/v1/declarations",
        headers=headers,
        timeout=30,
        files={"declaration": ("d.json", content), "signature": ("d.p7s", company_signer.sign(content))},
    )
    assert response.status_code == 202, response.text
    by_worker = response.json()["application_id"]
    wait_until(
        lambda: (
            httpx.get(f"{served['api']}/v1/declarations/{by_worker}", headers=headers, timeout=10).json()["status"] == "released"
        ),
        "the served worker to release the declaration",
        90,
    )

    def completed(application_id: str) -> bool:
        runs = httpx.post(
            f"{prefect}/flow_runs/filter",
            json={"flow_runs": {"tags": {"all_": [f"application:{application_id}"]}}},
            auth=login,
            timeout=10,
        ).json()
        return bool(runs) and all(r["state_type"] == "COMPLETED" for r in runs)

    wait_until(lambda: completed(by_cli) and completed(by_worker), "both clearance runs recorded as completed", 60)

    # The service's files: the data directory 0700, the databases, the login, the logs 0600.
    assert _mode(data) == 0o700 and _mode(data / "prefect") == 0o700
    for name in ("customs.db", "prefect-auth", "ops-alert-token", "prefect/prefect.db", "prefect/server.log"):
        assert _mode(data / name) == 0o600, name
    loose = []
    for path in data.rglob("*"):
        try:
            if not path.is_symlink() and _mode(path) & 0o077:
                loose.append(f"{path} {_mode(path):04o}")
        except FileNotFoundError:  # a temporary file gone meanwhile
            pass
    assert loose == []
    assert served["process"].poll() is None


def test_a_server_open_to_the_network_without_a_login_is_refused():
    from customs.orchestration.server import PrefectServerRefused, check_exposure, is_loopback

    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host)
        check_exposure(host, None)  # loopback: allowed without a login
    for host in ("0.0.0.0", "10.0.0.1", "::", "prefect.internal"):
        assert not is_loopback(host)
        with pytest.raises(PrefectServerRefused, match="CUSTOMS_PREFECT_AUTH_STRING"):
            check_exposure(host, None)
        check_exposure(host, "customs:" + "x" * 32)  # with a login: allowed


def test_customs_server_start_refuses_to_listen_on_the_network_without_a_login(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "CUSTOMS_"))}
    env.update(CUSTOMS_DATA_DIR=str(tmp_path / "data"), CUSTOMS_PREFECT_HOST="0.0.0.0", CUSTOMS_PREFECT_AUTH_STRING="")
    for ha in ([], ["--ha"]):
        if ha:
            env["CUSTOMS_PREFECT_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:5432/nothing-is-started"
        refused = subprocess.run([CUSTOMS, "server", "start", *ha], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "with no login" in refused.stderr and "CUSTOMS_PREFECT_AUTH_STRING" in refused.stderr
    assert not (tmp_path / "data" / "prefect" / "server.pid").exists()  # nothing was started


def test_the_login_is_generated_once_kept_private_and_given_to_every_process(tmp_path, monkeypatch, caplog):
    from customs.core.settings import Settings
    from customs.orchestration.ha import ha_environment
    from customs.orchestration.server import client_auth_string, client_environment, server_auth_string, server_environment

    settings = Settings(data_dir=tmp_path / "data")
    login = server_auth_string(settings)
    user, _, password = login.partition(":")
    assert user == "customs" and len(password) == 32 and password.replace("-", "").replace("_", "").isalnum()
    assert _mode(tmp_path / "data" / "prefect-auth") == 0o600
    assert server_auth_string(settings) == login  # kept: the same login next time
    server = server_environment(settings)
    assert server["PREFECT_SERVER_API_AUTH_STRING"] == server["PREFECT_API_AUTH_STRING"] == login
    pg = settings.model_copy(update={"prefect_database_url": "postgresql://postgres@127.0.0.1:5432/prefect"})
    assert ha_environment(pg)["PREFECT_SERVER_API_AUTH_STRING"] == login
    local = f"http://127.0.0.1:{settings.prefect_port}/api"
    assert client_environment(settings, local)["PREFECT_API_AUTH_STRING"] == login
    # Set by the operator: that one, for the server and the clients alike.
    chosen = Settings(data_dir=tmp_path / "other", prefect_auth_string="ops:" + "s" * 20)
    assert server_auth_string(chosen) == client_auth_string(chosen, "http://10.0.0.1:4200/api") == "ops:" + "s" * 20
    assert not (tmp_path / "other" / "prefect-auth").exists()
    # Empty: no login (refused off loopback, see above); the server's environment then carries none.
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "left:over-from-the-shell")
    off = Settings(data_dir=tmp_path / "off", prefect_auth_string="")
    assert server_auth_string(off) is None and "PREFECT_SERVER_API_AUTH_STRING" not in server_environment(off)
    # A configured API with no login known: a clear warning, no crash.
    elsewhere = Settings(data_dir=tmp_path / "elsewhere", prefect_api_url="http://10.9.9.9:4200/api")
    with caplog.at_level("WARNING", logger="customs.prefect_server"):
        assert client_auth_string(elsewhere, "http://10.9.9.9:4200/api") is None
    assert "CUSTOMS_PREFECT_AUTH_STRING" in caplog.text and "no login" in caplog.text
    # A malformed login is refused with what is expected.
    for bad in ("nocolon", "user:short", ":" + "p" * 20, "user:pass word with spaces"):
        with pytest.raises(ValueError, match="user:password"):
            Settings(prefect_auth_string=bad)


def test_data_dir_modes_are_tightened(tmp_path):
    from customs.core.files import open_private, tighten_data_dir

    data = tmp_path / "data"
    (data / "prefect").mkdir(parents=True)
    (data / "customs.db").write_bytes(b"x")
    (data / "customs.db").chmod(0o644)
    (data / "prefect" / "prefect.db").write_bytes(b"x")
    (data / "prefect" / "prefect.db").chmod(0o664)
    (data / "prefect").chmod(0o755)
    data.chmod(0o755)
    outside = tmp_path / "outside"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (data / "link").symlink_to(outside)
    assert tighten_data_dir(data) == 3
    assert _mode(data) == 0o700 and _mode(data / "prefect") == 0o700
    assert _mode(data / "customs.db") == 0o600 and _mode(data / "prefect" / "prefect.db") == 0o600
    assert _mode(outside) == 0o644  # a link is not followed
    with open_private(data / "logs" / "server.log") as log:
        log.write(b"line\n")
    assert _mode(data / "logs" / "server.log") == 0o600 and _mode(data / "logs") == 0o700


# --- No deployment lets a caller set the clock ------------------------------------------------------------------------

# Each deployment's parameters, all of them: none sets the clock, none names a person (a re-run names the official's
# signed act by its id: the official is whoever signed it).
DEPLOYMENT_PARAMETERS = {
    "clearance": {"application_id", "rerun_act", "wait_for_official", "from_step"},  # from_step: a step, not a clock
    "batch-recheck": {"restart", "batch_size"},
    "deadline-watch": set(),
    "outbox-dispatch": {"max_notices", "batch_size"},
    "print-deadlines": set(),
    "print-deadline-timer": {"request_id", "stage"},
    "paper-copy": {"request_id"},
    "crl-refresh": set(),
}


def test_no_deployment_takes_a_clock_parameter():
    from prefect.flows import load_flow_from_entrypoint

    from customs.core.paths import PROJECT_ROOT
    from customs.orchestration.deployments import read_deployments

    specs = read_deployments()
    assert {spec.name for spec in specs} == set(DEPLOYMENT_PARAMETERS)
    for spec in specs:
        flow = load_flow_from_entrypoint(str(PROJECT_ROOT / spec.entrypoint))
        assert set(flow.parameters.properties) == DEPLOYMENT_PARAMETERS[spec.name], spec.name
        assert set(spec.parameters) <= DEPLOYMENT_PARAMETERS[spec.name], spec.name


@pytest.mark.usefixtures("prefect_harness")
def test_a_print_deadlines_run_asked_for_another_moment_is_refused_by_prefect():
    from prefect.client.orchestration import get_client

    from customs.orchestration.deployments import read_deployments, register_deployments

    specs = [spec for spec in read_deployments() if spec.name in ("print-deadlines", "crl-refresh")]
    registered = register_deployments(specs)
    with get_client(sync_client=True) as client:
        for deployment_id, _ in registered.values():
            with pytest.raises(Exception, match="now"):
                client.create_flow_run_from_deployment(deployment_id, parameters={"now": "2026-12-09T09:00:00+05:00"})
            # (other tests of the session may have runs of these deployments: none with a clock)
            assert not [r for r in client.read_flow_runs() if r.deployment_id == deployment_id and "now" in r.parameters]
