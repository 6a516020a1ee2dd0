"""crl-refresh: real CRLs from TestPki, served by a real HTTP server on 127.0.0.1, installed into a copy of crl_dir."""

from __future__ import annotations

import os
import shutil
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from customs.core.clock import utcnow
from customs.core.settings import configure
from customs.pki.crl_refresh import CrlRefreshNotConfigured, check_crl, crl_file_name, crl_number, download_crl, refresh_crls
from customs.pki.testing import CmsSigner, TestPki, new_key
from customs.pki.verify import SignedDocument, configured_verifier, directory_fingerprint
from models.document import WrittenDeclarant
from tests.helpers import DECLARANT_BIN, free_port, make_settings

DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM
DATA = "Декларация на товары".encode() * 10


# ----------------------------------------------------------------------------------------------
# A real HTTP server on loopback: routes[path] = (status, body, extra headers)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        status, body, headers = self.server.routes.get(self.path, (404, b"not found", {}))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


class CrlServer:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def serve(self, path: str, body: bytes, status: int = 200, **headers) -> str:
        self.httpd.routes[path] = (status, body, headers)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests


@pytest.fixture
def server():
    crl_server = CrlServer()
    crl_server.thread.start()
    yield crl_server
    crl_server.httpd.shutdown()
    crl_server.httpd.server_close()


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}/nca_rsa.crl"  # nothing listens there


def settings_for(tmp_path: Path, pki: TestPki, urls: list[str], **overrides):
    """Settings trusting ``pki`` with a crl_dir of their own (a copy of the PKI's CRLs): the PKI's files are never touched."""
    crl_dir = tmp_path / "crl"
    if not crl_dir.exists():
        shutil.copytree(pki.crl_dir, crl_dir)
    return make_settings(tmp_path / "data", pki, crl_dir=crl_dir, crl_urls=urls, crl_download_timeout=5, **overrides)


def issuing_file(settings) -> Path:
    return settings.crl_dir / "issuing-ca.crl"


def current_number(settings) -> int:
    return crl_number(x509.load_der_x509_crl(issuing_file(settings).read_bytes()))


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(DER)


def root_crl(pki: TestPki, *, this_update, next_update=None) -> x509.CertificateRevocationList:
    """A CRL of the root, without a CRL Number (as ``TestPki.write_root_crl`` makes them)."""
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.root_cert.subject)
        .last_update(this_update)
        .next_update(next_update or this_update + timedelta(days=30))
        .sign(pki.root_key, hashes.SHA256())
    )


def only(report):
    assert len(report.results) == 1, report.results
    return report.results[0]


# ----------------------------------------------------------------------------------------------
# Through the HTTP server


def test_a_newer_crl_replaces_the_old_one_and_signature_checks_see_the_revocation(tmp_path, server):
    ca = TestPki.create(tmp_path / "pki")  # its own: a signer gets revoked
    settings = settings_for(tmp_path, ca, [server.url("/nca_rsa.crl")])
    issued = ca.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN)
    signature = CmsSigner(issued.cert_path, issued.key_path, (ca.issuing_cert_path,)).sign(DATA)
    submitted = utcnow()

    def verify():
        verifier = configured_verifier(settings.trust_dir, settings.crl_dir, require_non_repudiation=True, require_crl=True)
        verdict = verifier.verify(
            SignedDocument("declaration", "declaration.json", DATA, signature),
            declarant=WrittenDeclarant(bin=DECLARANT_BIN),
            at=submitted,
            now=utcnow(),
        )
        return verifier, [r.code for r in verdict.reasons]

    before, codes = verify()
    assert codes == []
    old = issuing_file(settings).read_bytes()

    ca.revoke(issued.serial, at=submitted - timedelta(minutes=5))  # the CA publishes (in its own directory)
    published = der(ca.build_crl(crl_number=current_number(settings) + 1))
    server.serve("/nca_rsa.crl", published)

    result = only(refresh_crls(settings))
    assert (result.outcome, result.code, result.file) == ("replaced", None, "issuing-ca.crl")
    assert result.crl_number == current_number(settings)
    assert "ҰКО TEST (RSA) CUSTOMS" in result.issuer
    content = issuing_file(settings).read_bytes()
    assert content != old and content == published
    assert sorted(p.name for p in settings.crl_dir.iterdir()) == ["issuing-ca.crl", "root.crl"]  # no temporary file left

    after, codes = verify()
    assert after is not before  # the write changed the directory's fingerprint: trust material reloaded
    assert codes == ["CERT_REVOKED"]


def test_a_crl_signed_by_another_key_is_rejected_and_the_old_file_stays(tmp_path, server, pki):
    settings = settings_for(tmp_path, pki, [server.url("/forged.crl")])
    old, old_stat = issuing_file(settings).read_bytes(), issuing_file(settings).stat()
    server.serve("/forged.crl", der(pki.build_crl(crl_number=current_number(settings) + 1, signing_key=new_key("rsa2048"))))
    result = only(refresh_crls(settings))
    assert (result.outcome, result.code) == ("rejected", "CRL_SIGNATURE_INVALID")
    assert "does not verify" in result.message and "kept issuing-ca.crl" in result.message
    assert issuing_file(settings).read_bytes() == old
    assert issuing_file(settings).stat().st_mtime_ns == old_stat.st_mtime_ns


def test_a_gost_cas_crl_is_installed_and_a_forged_one_is_rejected(tmp_path, server):
    """NCA's GOST CAs publish GOST-signed CRLs: the same checks apply, with the GOST signature verified."""
    gost_pki = TestPki.create(tmp_path / "gost-pki", families=("gost2004",))
    settings = settings_for(tmp_path, gost_pki, [server.url("/gost.crl")])
    current = settings.crl_dir / "issuing-ca-gost2004.crl"
    number = crl_number(x509.load_der_x509_crl(current.read_bytes()))
    forged = gost_pki.build_crl(family="gost2004", crl_number=number + 1, signing_key=new_key("gost2004"))
    server.serve("/gost.crl", der(forged))
    result = only(refresh_crls(settings))
    assert (result.outcome, result.code) == ("rejected", "CRL_SIGNATURE_INVALID")
    assert "does not verify" in result.message
    newer = gost_pki.build_crl(family="gost2004", crl_number=number + 1)
    server.serve("/gost.crl", der(newer))
    result = only(refresh_crls(settings))
    assert result.outcome == "replaced", result
    assert current.read_bytes() == der(newer)


def test_an_expired_crl_is_rejected(tmp_path, server, pki):
    settings = settings_for(tmp_path, pki, [server.url("/old.crl")])
    old = issuing_file(settings).read_bytes()
    expired = pki.build_crl(
        now=utcnow() - timedelta(days=3), next_update=utcnow() - timedelta(days=1), crl_number=current_number(settings) + 1
    )
    server.serve("/old.crl", der(expired))
    result = only(refresh_crls(settings))
    assert (result.outcome, result.code) == ("rejected", "CRL_EXPIRED")
    assert result.next_update == expired.next_update_utc
    assert issuing_file(settings).read_bytes() == old


def test_a_crl_dated_in_the_future_is_rejected(tmp_path, server, pki):
    settings = settings_for(tmp_path, pki, [server.url("/future.crl")])
    server.serve("/future.crl", der(pki.build_crl(now=utcnow() + timedelta(hours=2), crl_number=current_number(settings) + 1)))
    assert only(refresh_crls(settings)).code == "CRL_NOT_YET_VALID"


def test_an_older_crl_by_its_number_is_rejected(tmp_path, server, pki):
    settings = settings_for(tmp_path, pki, [server.url("/rollback.crl")])
    old = issuing_file(settings).read_bytes()
    # dated later than the current one, but numbered lower: the number decides
    server.serve("/rollback.crl", der(pki.build_crl(crl_number=current_number(settings) - 1)))
    result = only(refresh_crls(settings))
    assert (result.outcome, result.code) == ("rejected", "CRL_OLDER_THAN_CURRENT")
    assert f"CRL Number {current_number(settings) - 1} is lower" in result.message
    assert issuing_file(settings).read_bytes() == old


def test_a_crl_of_an_unknown_issuer_is_rejected(tmp_path, server, pki):
    stranger = TestPki.create(tmp_path / "stranger", root_name="ROGUE ROOT", issuing_name="ROGUE CA")
    settings = settings_for(tmp_path, pki, [server.url("/rogue.crl")])
    before = sorted((p.name, p.read_bytes()) for p in settings.crl_dir.iterdir())
    server.serve("/rogue.crl", (stranger.crl_dir / "issuing-ca.crl").read_bytes())
    result = only(refresh_crls(settings))
    assert (result.outcome, result.code) == ("rejected", "CRL_ISSUER_UNKNOWN")
    assert "ROGUE CA" in result.message and "nothing written" in result.message
    assert sorted((p.name, p.read_bytes()) for p in settings.crl_dir.iterdir()) == before


def test_failed_downloads_and_garbage_do_not_stop_the_other_urls(tmp_path, server, pki):
    root_update = root_crl(pki, this_update=utcnow() - timedelta(seconds=30))
    urls = [
        server.url("/missing.crl"),  # 404
        refused_url(),
        server.serve("/garbage.crl", b"<html><body>Service temporarily unavailable</body></html>"),
        server.serve("/nca_rsa.crl", b""),  # set below, once the copy exists
        server.serve("/root.crl", der(root_update)),
    ]
    settings = settings_for(tmp_path, pki, urls)
    newer = der(pki.build_crl(crl_number=current_number(settings) + 1))
    server.serve("/nca_rsa.crl", newer)

    results = refresh_crls(settings).results
    assert [(r.url, r.outcome, r.code) for r in results] == [
        (urls[0], "download_failed", "CRL_DOWNLOAD_FAILED"),
        (urls[1], "download_failed", "CRL_DOWNLOAD_FAILED"),
        (urls[2], "rejected", "CRL_UNPARSABLE"),
        (urls[3], "replaced", None),
        (urls[4], "replaced", None),
    ]
    assert urls[0] in results[0].message and "HTTP 404" in results[0].message
    assert urls[1] in results[1].message and "ConnectError" in results[1].message
    assert "not a CRL" in results[2].message
    assert issuing_file(settings).read_bytes() == newer
    assert (settings.crl_dir / "root.crl").read_bytes() == der(root_update)


def test_an_identical_crl_is_unchanged_whether_served_as_der_or_pem(tmp_path, server, pki):
    settings = settings_for(tmp_path, pki, [server.url("/same.der"), server.url("/same.pem")])
    current = issuing_file(settings).read_bytes()
    os.utime(issuing_file(settings), ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    server.serve("/same.der", current)
    server.serve("/same.pem", x509.load_der_x509_crl(current).public_bytes(PEM))
    results = refresh_crls(settings).results
    assert [(r.outcome, r.code, r.file) for r in results] == [("unchanged", None, "issuing-ca.crl")] * 2
    assert issuing_file(settings).read_bytes() == current
    assert issuing_file(settings).stat().st_mtime_ns == 1_700_000_000_000_000_000  # not even rewritten


def test_a_crl_of_a_ca_without_one_is_added_under_its_issuer_name_then_older_ones_are_refused(tmp_path, server, pki):
    settings = settings_for(tmp_path, pki, [server.url("/root.crl")])
    (settings.crl_dir / "root.crl").unlink()
    first = root_crl(pki, this_update=utcnow() - timedelta(minutes=10))
    server.serve("/root.crl", first.public_bytes(PEM))  # PEM in, DER on disk
    result = only(refresh_crls(settings))
    name = crl_file_name(pki.root_cert.subject)
    assert (result.outcome, result.file, result.crl_number) == ("added", name, None)
    assert name.startswith("TEST_RSA_CUSTOMS-") and name.endswith(".crl") and len(name) == len("TEST_RSA_CUSTOMS-") + 8 + 4
    assert (settings.crl_dir / name).read_bytes() == der(first)

    # no CRL Numbers: thisUpdate decides
    server.serve("/root.crl", der(root_crl(pki, this_update=utcnow() - timedelta(hours=1))))
    result = only(refresh_crls(settings))
    assert (result.outcome, result.code) == ("rejected", "CRL_OLDER_THAN_CURRENT")
    assert "earlier than the current CRL's" in result.message
    newer = root_crl(pki, this_update=utcnow() - timedelta(minutes=1))
    server.serve("/root.crl", der(newer))
    assert only(refresh_crls(settings)).outcome == "replaced"
    assert (settings.crl_dir / name).read_bytes() == der(newer)
    others = [p.name for p in pki.crl_dir.iterdir() if p.name != "root.crl"]  # the issuing CAs' CRLs (RSA and GOST)
    assert sorted(p.name for p in settings.crl_dir.iterdir()) == sorted([*others, name])


def test_a_same_size_replacement_still_changes_the_fingerprint_the_verifier_watches(tmp_path, server, pki):
    settings = settings_for(tmp_path, pki, [server.url("/nca_rsa.crl")])
    old = issuing_file(settings).read_bytes()
    newer = der(pki.build_crl(crl_number=current_number(settings) + 1))
    assert len(newer) == len(old)  # same entries, number of the same length
    future = (utcnow() + timedelta(days=1)).timestamp()
    os.utime(issuing_file(settings), (future, future))  # as if the old file's mtime were the clock tick of the new one (or later)
    before = directory_fingerprint(settings.crl_dir)
    server.serve("/nca_rsa.crl", newer)
    assert only(refresh_crls(settings)).outcome == "replaced"
    assert issuing_file(settings).read_bytes() == newer
    assert issuing_file(settings).stat().st_mtime_ns > int(future * 1e9)
    assert directory_fingerprint(settings.crl_dir) != before


def test_a_pem_file_is_replaced_by_pem(tmp_path, server, pki):
    settings = settings_for(tmp_path, pki, [server.url("/nca_rsa.crl")])
    current = x509.load_der_x509_crl(issuing_file(settings).read_bytes())
    issuing_file(settings).unlink()
    (settings.crl_dir / "nca.pem").write_bytes(current.public_bytes(PEM))
    (settings.crl_dir / "nca.pem").chmod(0o640)
    newer = pki.build_crl(crl_number=crl_number(current) + 1)
    server.serve("/nca_rsa.crl", der(newer))
    result = only(refresh_crls(settings))
    assert (result.outcome, result.file) == ("replaced", "nca.pem")
    assert (settings.crl_dir / "nca.pem").read_bytes() == newer.public_bytes(PEM)
    assert (settings.crl_dir / "nca.pem").stat().st_mode & 0o777 == 0o640


def test_a_forged_file_in_crl_dir_is_replaced_by_a_verified_crl(tmp_path, server, pki):
    settings = settings_for(tmp_path, pki, [server.url("/nca_rsa.crl")])
    forged = pki.build_crl(crl_number=current_number(settings) + 100, signing_key=new_key("rsa2048"))
    issuing_file(settings).write_bytes(der(forged))
    good = der(pki.build_crl(crl_number=1))  # the forged number does not hold the real CRL back
    server.serve("/nca_rsa.crl", good)
    result = only(refresh_crls(settings))
    assert (result.outcome, result.file) == ("replaced", "issuing-ca.crl")
    assert "not signed by" in result.message
    assert issuing_file(settings).read_bytes() == good


def test_redirects_are_followed_and_limits_hold(tmp_path, server, pki):
    body = (pki.crl_dir / "issuing-ca.crl").read_bytes()
    server.serve("/current.crl", body)
    moved = server.serve("/moved.crl", b"", status=302, Location=server.url("/current.crl"))
    download = download_crl(moved, timeout=5)
    assert download.ok and download.content == body and download.final_url.endswith("/current.crl")

    too_big = download_crl(server.url("/current.crl"), timeout=5, max_bytes=len(body) - 1)
    assert not too_big.ok and "more than" in too_big.error
    assert "HTTP 500" in download_crl(server.serve("/error.crl", b"oops", status=500), timeout=5).error
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x.crl", "nca_rsa.crl"):
        result = download_crl(url, timeout=5)
        assert not result.ok and "only http and https" in result.error
    # the same refusal through refresh_crls, before any network access
    settings = settings_for(tmp_path, pki, ["file:///etc/passwd", server.url("/moved.crl")])
    results = refresh_crls(settings).results
    assert [(r.outcome, r.code) for r in results] == [("download_failed", "CRL_DOWNLOAD_FAILED"), ("unchanged", None)]


def test_configuration(tmp_path, pki):
    assert refresh_crls(make_settings(tmp_path / "data")).results == []  # no URLs, nothing to do
    with pytest.raises(CrlRefreshNotConfigured):
        refresh_crls(make_settings(tmp_path / "data", crl_urls=["http://127.0.0.1:1/x.crl"]))


# ----------------------------------------------------------------------------------------------
# The rules as a plain function


def test_rules_without_network(pki):
    now = utcnow()
    certificates = [pki.root_cert, pki.issuing_cert]
    current = pki.build_crl(now=now - timedelta(hours=1), crl_number=10)
    key = current.issuer.public_bytes()

    def decide(crl, **kw):
        blob = crl if isinstance(crl, bytes) else der(crl)
        return check_crl(blob, certificates=certificates, current={key: current}, now=now, **kw)

    assert decide(pki.build_crl(now=now, crl_number=11)).verdict == "accept"
    assert decide(der(current)).verdict == "unchanged"
    assert decide(current.public_bytes(PEM)).verdict == "unchanged"
    # a small clock difference is tolerated, more is not
    assert decide(pki.build_crl(now=now + timedelta(minutes=3), crl_number=11)).verdict == "accept"
    assert decide(pki.build_crl(now=now + timedelta(minutes=10), crl_number=11)).code == "CRL_NOT_YET_VALID"
    # the same number with other content is not newer
    same_number = decide(pki.build_crl(now=now, crl_number=10))
    assert (same_number.code, "content differs" in same_number.message) == ("CRL_OLDER_THAN_CURRENT", True)
    # a higher number but an earlier thisUpdate goes backwards
    assert decide(pki.build_crl(now=now - timedelta(hours=2), crl_number=12)).code == "CRL_OLDER_THAN_CURRENT"
    # nothing current: any valid CRL of a known CA
    assert check_crl(der(current), certificates=certificates, current={}, now=now).verdict == "accept"
    # unparsable, unknown issuer, no trust at all
    for garbage in (
        b"",
        b"\x30\x03\x02\x01\x01",
        b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        der(current)[:-10],
    ):
        assert decide(garbage).code == "CRL_UNPARSABLE", garbage[:20]
    assert check_crl(der(current), certificates=[pki.root_cert], now=now).code == "CRL_ISSUER_UNKNOWN"
    # a delta CRL cannot stand as the CA's CRL
    delta = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.issuing_cert.subject)
        .last_update(now - timedelta(minutes=1))
        .next_update(now + timedelta(hours=12))
        .add_extension(x509.CRLNumber(11), critical=False)
        .add_extension(x509.DeltaCRLIndicator(10), critical=True)
        .sign(pki.issuing_key, hashes.SHA256())
    )
    assert decide(delta).code == "CRL_UNSUPPORTED"
    # a certificate with the CA's name that is not a CA certificate does not make its CRLs acceptable
    impostor_key = new_key("rsa2048")
    impostor = (
        x509.CertificateBuilder()
        .subject_name(pki.issuing_cert.subject)
        .issuer_name(pki.root_cert.subject)
        .public_key(impostor_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(pki.root_key, hashes.SHA256())
    )
    by_impostor = pki.build_crl(now=now, crl_number=11, signing_key=impostor_key)
    refused = check_crl(der(by_impostor), certificates=[pki.root_cert, impostor], now=now)
    assert (refused.code, "not as a CA" in refused.message) == ("CRL_ISSUER_UNKNOWN", True)


# ----------------------------------------------------------------------------------------------
# The flow


@pytest.mark.usefixtures("prefect_harness")
def test_the_flow_reports_each_url_and_publishes_an_artifact(tmp_path, server, pki):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.crl_refresh import crl_refresh

    urls = [server.url("/nca_rsa.crl"), server.url("/missing.crl")]
    settings = settings_for(tmp_path, pki, urls)
    newer = der(pki.build_crl(crl_number=current_number(settings) + 1))
    server.serve("/nca_rsa.crl", newer)
    configure(settings)
    try:
        rows = crl_refresh()
    finally:
        configure(None)
    assert [(r["url"], r["outcome"], r["code"]) for r in rows] == [
        (urls[0], "replaced", None),
        (urls[1], "download_failed", "CRL_DOWNLOAD_FAILED"),
    ]
    assert rows[0]["crl_number"] == str(current_number(settings)) and rows[0]["next_update"]
    assert issuing_file(settings).read_bytes() == newer

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["crl-refresh"])))
    assert artifacts and "download_failed" in str(artifacts[0].data)
