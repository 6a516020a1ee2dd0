"""crl-refresh: download the CAs' CRLs into ``crl_dir``, each verified against its issuer before it replaces the old one.

For every URL of ``CUSTOMS_CRL_URLS`` (hourly in production, flow ``crl-refresh``):

  download (httpx; http/https only, redirects followed, ``crl_download_timeout`` for the whole download,
  at most 50 MiB)  ->  check (``check_crl``: pure, no network, no Prefect)  ->  write atomically into
  ``crl_dir`` (a temporary file in the same directory, fsync, ``os.replace``) over the file that holds the
  current CRL of the same issuer, or a new file ``<issuer CN>-<sha1 of issuer name, 8 hex>.crl`` (DER).

A rejected download never touches ``crl_dir``: the old CRL stays, byte for byte. One bad URL never stops
the others. Reason codes of a rejection:

  CRL_DOWNLOAD_FAILED     network error, time-out, HTTP status other than 200, too large, not http(s)
  CRL_UNPARSABLE          not a CRL (DER or PEM)
  CRL_ISSUER_UNKNOWN      its issuer is not a CA certificate of ``trust_dir``
  CRL_SIGNATURE_INVALID   not signed by the key of that CA
  CRL_UNSUPPORTED         a delta, indirect or partial-reason CRL: ``crl_dir`` holds complete CRLs only
                          (the verifier takes the newest CRL of a CA as complete)
  CRL_EXPIRED             its nextUpdate has passed
  CRL_NOT_YET_VALID       its thisUpdate is more than ``CLOCK_SKEW`` ahead
  CRL_OLDER_THAN_CURRENT  not newer than the CRL in ``crl_dir`` (lower CRL Number, the same number with
                          other content, or an earlier thisUpdate)

An identical CRL (the same DER, whether it came as DER or PEM) is ``unchanged`` and nothing is written.

``customs.pki.verify.configured_verifier`` reloads trust material when the fingerprint of ``crl_dir`` (file
names, mtime_ns, sizes) changes. A replacement always gets a later mtime than the file it replaces (moved
forward when the clock or a coarse file-system timestamp would give the same one), so the new CRL is
used by the next signature check even when its size is the same as the old one's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from customs.core.clock import utcnow
from customs.core.settings import Settings, get_settings
from customs.pki.certificates import crl_signed_by, describe_name, gost_key_of, load_crl
from customs.pki.trust import TrustMaterial

try:  # POSIX: refreshes of one crl_dir are serialised with a lock on the directory
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

MAX_CRL_BYTES = 50 * 1024 * 1024
CLOCK_SKEW = timedelta(minutes=5)
ALLOWED_SCHEMES = frozenset({"http", "https"})
MAX_REDIRECTS = 5
TEMP_PREFIX = ".crl-refresh-"
TEMP_SUFFIX = ".tmp"
USER_AGENT = "kz-customs-clearance crl-refresh"

CRL_DOWNLOAD_FAILED = "CRL_DOWNLOAD_FAILED"
CRL_UNPARSABLE = "CRL_UNPARSABLE"
CRL_ISSUER_UNKNOWN = "CRL_ISSUER_UNKNOWN"
CRL_SIGNATURE_INVALID = "CRL_SIGNATURE_INVALID"
CRL_UNSUPPORTED = "CRL_UNSUPPORTED"
CRL_EXPIRED = "CRL_EXPIRED"
CRL_NOT_YET_VALID = "CRL_NOT_YET_VALID"
CRL_OLDER_THAN_CURRENT = "CRL_OLDER_THAN_CURRENT"
CRL_WRITE_FAILED = "CRL_WRITE_FAILED"
CRL_REFRESH_ERROR = "CRL_REFRESH_ERROR"

REPLACED, ADDED, UNCHANGED, REJECTED, DOWNLOAD_FAILED, ERROR = (
    "replaced",
    "added",
    "unchanged",
    "rejected",
    "download_failed",
    "error",
)
PROBLEM_OUTCOMES = frozenset({REJECTED, DOWNLOAD_FAILED, ERROR})


class CrlRefreshNotConfigured(RuntimeError):
    """CRL URLs are configured but there is no trust_dir or crl_dir to check them against and write them to."""


# ----------------------------------------------------------------------------------------------
# The rules (pure: bytes, certificates, current CRLs and a time in; a decision out)


@dataclass(frozen=True)
class CrlDecision:
    """``verdict`` is ``accept`` (write it), ``unchanged`` (identical to the current CRL) or ``reject`` (with ``code``)."""

    verdict: str
    code: str | None
    message: str
    crl: x509.CertificateRevocationList | None = field(default=None, repr=False)
    issuer_cert: x509.Certificate | None = field(default=None, repr=False)

    @property
    def accepted(self) -> bool:
        return self.verdict == "accept"


def _reject(code: str, message: str, crl=None, issuer_cert=None) -> CrlDecision:
    return CrlDecision("reject", code, message, crl, issuer_cert)


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def parse_crl(blob: bytes) -> x509.CertificateRevocationList:
    """The CRL in ``blob`` (DER or PEM, as ``tasks.signature`` loads them), every field the verifier reads parsed now.

    ``cryptography`` parses some parts lazily; a CRL whose revoked entries or extensions are malformed
    is refused here (``ValueError``) rather than failing later inside a signature check.
    """
    if not blob or not blob.strip():
        raise ValueError("empty")
    crl = load_crl(blob)
    crl.issuer.public_bytes()
    _ = (crl.last_update_utc, crl.next_update_utc)
    for _ in crl.extensions:
        pass
    for revoked in crl:
        _ = (revoked.serial_number, revoked.revocation_date_utc)
        for _ in revoked.extensions:
            pass
    return crl


def is_crl_issuer(cert: x509.Certificate) -> bool:
    """A CA certificate (basicConstraints cA) whose keyUsage, when present, allows signing CRLs."""
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign
    except x509.ExtensionNotFound:
        return True


def _scope_problem(crl: x509.CertificateRevocationList) -> str | None:
    """Why this CRL cannot stand as its CA's complete CRL (``None`` when it can)."""
    try:
        base = crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number
        return f"a delta CRL (base CRL Number {base}); only complete CRLs can replace a CA's CRL"
    except x509.ExtensionNotFound:
        pass
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return None
    if idp.indirect_crl:
        return "an indirect CRL (entries of other issuers); only a CA's own complete CRL is accepted"
    if idp.only_some_reasons:
        return "a CRL covering only some revocation reasons; only complete CRLs are accepted"
    if idp.only_contains_attribute_certs:
        return "a CRL of attribute certificates only"
    return None


def check_crl(
    blob: bytes,
    *,
    certificates: Sequence[x509.Certificate],
    current: Mapping[bytes, x509.CertificateRevocationList] | None = None,
    now: datetime,
    skew: timedelta = CLOCK_SKEW,
) -> CrlDecision:
    """Accept, find unchanged, or reject a downloaded CRL.

    ``certificates``: the CA certificates of ``trust_dir`` (anchors and intermediates); ``current``: the
    CRL now in ``crl_dir`` for each issuer, keyed by the issuer's DER-encoded name (``crl.issuer.public_bytes()``,
    the key ``TrustMaterial`` indexes CRLs by), only CRLs that verified against their CA.
    """
    try:
        crl = parse_crl(blob)
    except Exception as exc:  # cryptography raises ValueError, but be sure garbage never escapes
        head = blob[:16]
        return _reject(CRL_UNPARSABLE, f"not a CRL in DER or PEM ({len(blob)} bytes starting {head!r}): {exc}")
    issuer_name = describe_name(crl.issuer)
    issuer_der = crl.issuer.public_bytes()

    # The issuer: a CA certificate of trust_dir with exactly this name (several after a key rollover).
    named = [c for c in certificates if c.subject.public_bytes() == issuer_der]
    candidates = [c for c in named if is_crl_issuer(c)]
    if not candidates:
        if named:
            return _reject(
                CRL_ISSUER_UNKNOWN,
                f"issuer {issuer_name!r} is in the trust directory but not as a CA allowed to sign CRLs "
                "(basicConstraints cA, keyUsage cRLSign)",
                crl,
            )
        return _reject(CRL_ISSUER_UNKNOWN, f"issuer {issuer_name!r} is not a CA certificate of the trust directory", crl)

    # The signature, with that CA's key.
    signer = next((c for c in candidates if crl_signed_by(crl, c)), None)
    if signer is None:
        unsupported = []
        for c in candidates:
            try:
                if gost_key_of(c) is None:  # NCA's GOST keys are verified (customs.pki.gost)
                    c.public_key()
            except (UnsupportedAlgorithm, ValueError):
                unsupported.append(c)
        if len(unsupported) == len(candidates):
            return _reject(
                CRL_SIGNATURE_INVALID,
                f"the key of {issuer_name!r} is of an algorithm this system cannot verify; the CRL cannot be checked",
                crl,
            )
        return _reject(
            CRL_SIGNATURE_INVALID,
            f"the CRL names {issuer_name!r} as issuer but its signature does not verify with that CA's key",
            crl,
        )

    scope = _scope_problem(crl)
    if scope:
        return _reject(CRL_UNSUPPORTED, f"CRL of {issuer_name!r} is {scope}", crl, signer)

    # Its validity period, as of now.
    this_update, next_update = crl.last_update_utc, crl.next_update_utc
    previous = (current or {}).get(issuer_der)
    same_as_current = previous is not None and previous.public_bytes(serialization.Encoding.DER) == crl.public_bytes(
        serialization.Encoding.DER
    )
    if next_update is not None and next_update < now:
        note = " (it is the CRL already in the CRL directory: the CA has published no newer one)" if same_as_current else ""
        return _reject(
            CRL_EXPIRED,
            f"CRL of {issuer_name!r} expired at {next_update.isoformat()} (nextUpdate), before {now.isoformat()}{note}",
            crl,
            signer,
        )
    if this_update > now + skew:
        return _reject(
            CRL_NOT_YET_VALID,
            f"CRL of {issuer_name!r} is dated {this_update.isoformat()} (thisUpdate), "
            f"more than {int(skew.total_seconds())} s after {now.isoformat()}",
            crl,
            signer,
        )

    # Against the current CRL of that issuer.
    if previous is None:
        return CrlDecision("accept", None, f"a CRL of {issuer_name!r}, the first one in the CRL directory", crl, signer)
    if same_as_current or previous.tbs_certlist_bytes == crl.tbs_certlist_bytes:
        return CrlDecision("unchanged", None, f"identical to the current CRL of {issuer_name!r}", crl, signer)
    number, current_number = crl_number(crl), crl_number(previous)
    if number is not None and current_number is not None:
        if number < current_number:
            return _reject(
                CRL_OLDER_THAN_CURRENT, f"CRL Number {number} is lower than the current CRL's ({current_number})", crl, signer
            )
        if number == current_number:
            return _reject(
                CRL_OLDER_THAN_CURRENT,
                f"CRL Number {number} is the current CRL's but its content differs; a CA issues each number once",
                crl,
                signer,
            )
    if this_update < previous.last_update_utc:
        return _reject(
            CRL_OLDER_THAN_CURRENT,
            f"thisUpdate {this_update.isoformat()} is earlier than the current CRL's ({previous.last_update_utc.isoformat()})",
            crl,
            signer,
        )
    if (number is None or current_number is None) and this_update == previous.last_update_utc:
        return _reject(
            CRL_OLDER_THAN_CURRENT,
            f"thisUpdate {this_update.isoformat()} is the current CRL's and there is no higher CRL Number: not newer",
            crl,
            signer,
        )
    newer = (
        f"CRL Number {current_number} -> {number}"
        if number is not None and current_number is not None
        else f"thisUpdate {previous.last_update_utc.isoformat()} -> {this_update.isoformat()}"
    )
    return CrlDecision("accept", None, f"newer CRL of {issuer_name!r} ({newer})", crl, signer)


def crl_file_name(issuer: x509.Name) -> str:
    """``<issuer CN, ASCII letters, digits, . _ ->-<first 8 hex of SHA-1 of the issuer's DER name>.crl``."""
    common_names = issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(common_names[0].value) if common_names else "").strip("._-")[:60] or "crl"
    return f"{base}-{hashlib.sha1(issuer.public_bytes()).hexdigest()[:8]}.crl"


# ----------------------------------------------------------------------------------------------
# Download


@dataclass(frozen=True)
class Download:
    url: str
    content: bytes | None = field(default=None, repr=False)
    error: str | None = None
    status_code: int | None = None
    final_url: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.content is not None


def download_crl(url: str, *, timeout: float, max_bytes: int = MAX_CRL_BYTES, client: httpx.Client | None = None) -> Download:
    """GET ``url`` (http or https, redirects followed): the body of a 200 answer, or why there is none.

    ``timeout`` bounds each network operation and the whole download; bodies above ``max_bytes`` (after
    any Content-Encoding is undone) are abandoned. Never raises for a network problem.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        return Download(url, error=f"not a URL ({exc})")
    if parts.scheme.lower() not in ALLOWED_SCHEMES or not parts.hostname:
        return Download(url, error=f"only http and https URLs are downloaded, not {parts.scheme or 'a URL without scheme'}:")
    deadline = time.monotonic() + timeout
    own = client is None
    if own:
        client = httpx.Client(
            timeout=timeout,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            headers={"User-Agent": USER_AGENT, "Accept": "application/pkix-crl, application/x-pkcs7-crl, */*"},
        )
    try:
        with client.stream("GET", url) as response:
            final = str(response.url)
            if response.url.scheme not in ALLOWED_SCHEMES:  # pragma: no cover - httpx has no other transports
                return Download(url, error=f"redirected to {final}, not http(s)", final_url=final)
            if response.status_code != 200:
                where = f" (after redirects, from {final})" if final != url else ""
                return Download(
                    url,
                    error=f"HTTP {response.status_code} {response.reason_phrase}{where}",
                    status_code=response.status_code,
                    final_url=final,
                )
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                return Download(
                    url,
                    error=f"the CRL is {int(declared)} bytes (Content-Length), more than the {max_bytes} allowed",
                    status_code=200,
                    final_url=final,
                )
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    return Download(
                        url, error=f"more than {max_bytes} bytes; download abandoned", status_code=200, final_url=final
                    )
                if time.monotonic() > deadline:
                    return Download(
                        url, error=f"not complete after {timeout:g} s; download abandoned", status_code=200, final_url=final
                    )
                chunks.append(chunk)
            return Download(url, content=b"".join(chunks), status_code=200, final_url=final)
    except httpx.TimeoutException as exc:
        return Download(url, error=f"timed out after {timeout:g} s ({type(exc).__name__})")
    except httpx.TooManyRedirects:
        return Download(url, error=f"more than {MAX_REDIRECTS} redirects")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return Download(url, error=f"{type(exc).__name__}: {exc or 'no detail'}")
    finally:
        if own:
            client.close()


# ----------------------------------------------------------------------------------------------
# The CRL directory


@dataclass
class CurrentCrl:
    """The file holding an issuer's current CRL; ``valid`` is False when it is not signed by a CA of trust_dir."""

    path: Path
    crl: x509.CertificateRevocationList
    pem: bool
    valid: bool


def current_crls(crl_dir: Path, certificates: Sequence[x509.Certificate]) -> dict[bytes, CurrentCrl]:
    """For each issuer (DER name), the file the verifier takes as its current CRL: the newest by thisUpdate among
    those its CA signed (as ``TrustMaterial.revocation_problem`` chooses); when none verifies, the first file
    naming that issuer (a refreshed CRL replaces it)."""
    by_issuer: dict[bytes, list[CurrentCrl]] = {}
    for path in sorted(p for p in Path(crl_dir).iterdir() if p.is_file() and not _is_temp(p)):
        try:
            blob = path.read_bytes()
            crl = load_crl(blob)
            issuer = crl.issuer.public_bytes()
        except (OSError, ValueError):
            continue
        cas = [c for c in certificates if c.subject.public_bytes() == issuer]
        valid = any(crl_signed_by(crl, c) for c in cas)
        by_issuer.setdefault(issuer, []).append(CurrentCrl(path, crl, b"-----BEGIN" in blob, valid))
    result = {}
    for issuer, entries in by_issuer.items():
        good = [e for e in entries if e.valid]
        result[issuer] = max(good, key=lambda e: e.crl.last_update_utc) if good else entries[0]
    return result


def _is_temp(path: Path) -> bool:
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX)


def atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file in the same directory and ``os.replace``.

    Readers see the old file or the new one, never a part. The new file keeps the old one's permissions
    (0644 for a new file) and gets a later mtime than the old one, so that the verifier's fingerprint of
    the directory (name, mtime_ns, size) changes even for a same-size CRL written within one clock tick.
    """
    directory = target.parent
    try:
        previous = target.stat()
    except FileNotFoundError:
        previous = None
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=directory)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, stat.S_IMODE(previous.st_mode) if previous is not None else 0o644)
        if previous is not None:
            written = temp.stat()
            if written.st_mtime_ns <= previous.st_mtime_ns:
                os.utime(temp, ns=(written.st_atime_ns, previous.st_mtime_ns + 1_000_000_000))
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Serialise refreshes of one CRL directory (two overlapping runs never interleave check and write)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# ----------------------------------------------------------------------------------------------
# The refresh


@dataclass(frozen=True)
class CrlUrlResult:
    url: str
    outcome: str  # replaced, added, unchanged, rejected, download_failed, error
    code: str | None
    message: str
    issuer: str | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    crl_number: int | None = None
    file: str | None = None  # the file written, or kept

    @property
    def problem(self) -> bool:
        return self.outcome in PROBLEM_OUTCOMES

    def as_dict(self) -> dict:
        """JSON-ready; the CRL Number as a decimal string (NCA's are up to 20 octets, beyond JavaScript's integers)."""
        return {
            "url": self.url,
            "outcome": self.outcome,
            "code": self.code,
            "message": self.message,
            "issuer": self.issuer,
            "this_update": self.this_update.isoformat() if self.this_update else None,
            "next_update": self.next_update.isoformat() if self.next_update else None,
            "crl_number": str(self.crl_number) if self.crl_number is not None else None,
            "file": self.file,
        }


@dataclass
class CrlRefreshReport:
    results: list[CrlUrlResult] = field(default_factory=list)

    @property
    def problems(self) -> list[CrlUrlResult]:
        return [r for r in self.results if r.problem]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        return counts

    def as_dicts(self) -> list[dict]:
        return [r.as_dict() for r in self.results]


def _result(
    url: str,
    outcome: str,
    code: str | None,
    message: str,
    crl: x509.CertificateRevocationList | None = None,
    file: Path | None = None,
) -> CrlUrlResult:
    return CrlUrlResult(
        url=url,
        outcome=outcome,
        code=code,
        message=message,
        issuer=describe_name(crl.issuer) if crl is not None else None,
        this_update=crl.last_update_utc if crl is not None else None,
        next_update=crl.next_update_utc if crl is not None else None,
        crl_number=crl_number(crl) if crl is not None else None,
        file=file.name if file is not None else None,
    )


def _refresh_one(
    url: str,
    *,
    settings: Settings,
    crl_dir: Path,
    certificates: Sequence[x509.Certificate],
    current: dict[bytes, CurrentCrl],
    now: datetime,
) -> CrlUrlResult:
    download = download_crl(url, timeout=settings.crl_download_timeout)
    if not download.ok:
        return _result(url, DOWNLOAD_FAILED, CRL_DOWNLOAD_FAILED, f"{url}: {download.error}")
    decision = check_crl(
        download.content, certificates=certificates, current={k: v.crl for k, v in current.items() if v.valid}, now=now
    )
    issuer_der = decision.crl.issuer.public_bytes() if decision.crl is not None else None
    existing = current.get(issuer_der) if issuer_der is not None else None
    if decision.verdict == "reject":
        kept = f"; kept {existing.path.name}" if existing is not None else "; nothing written"
        return _result(url, REJECTED, decision.code, decision.message + kept, decision.crl, existing.path if existing else None)
    if decision.verdict == "unchanged":
        return _result(url, UNCHANGED, None, decision.message, decision.crl, existing.path)

    crl = decision.crl
    target = existing.path if existing is not None else crl_dir / crl_file_name(crl.issuer)
    pem = existing is not None and existing.pem  # a PEM file stays PEM; new files are DER
    data = crl.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)
    try:
        atomic_write(target, data)
    except OSError as exc:
        return _result(
            url,
            ERROR,
            CRL_WRITE_FAILED,
            f"{decision.message}, but writing {target} failed: {exc}",
            crl,
            existing.path if existing else None,
        )
    note = (
        "" if existing is None or existing.valid else f" (the file held a CRL not signed by {describe_name(crl.issuer)!r}'s key)"
    )
    current[issuer_der] = CurrentCrl(target, crl, pem, True)
    return _result(
        url, REPLACED if existing is not None else ADDED, None, f"{decision.message}; wrote {target.name}{note}", crl, target
    )


def refresh_crls(settings: Settings | None = None, now: datetime | None = None) -> CrlRefreshReport:
    """Download, check and install the CRL of every URL of ``settings.crl_urls``; one result per URL, in order.

    Never raises for a bad URL or a bad CRL; raises ``CrlRefreshNotConfigured`` when URLs are configured
    without ``trust_dir`` or ``crl_dir``. ``now`` (default: the time of each check) is the moment the
    validity periods are judged at.
    """
    settings = settings or get_settings()
    urls = list(settings.crl_urls)
    report = CrlRefreshReport()
    if not urls:
        return report
    if settings.trust_dir is None or settings.crl_dir is None:
        raise CrlRefreshNotConfigured(
            "CUSTOMS_CRL_URLS is set but CUSTOMS_TRUST_DIR and CUSTOMS_CRL_DIR are both needed: "
            "CRLs are verified against trust_dir and written to crl_dir"
        )
    crl_dir = Path(settings.crl_dir)
    crl_dir.mkdir(parents=True, exist_ok=True)
    material = TrustMaterial.load(settings.trust_dir, None)
    certificates = material.roots + material.intermediates
    with _directory_lock(crl_dir):
        for leftover in (p for p in crl_dir.iterdir() if _is_temp(p)):  # from a run that died between write and rename
            with contextlib.suppress(OSError):
                leftover.unlink()
        current = current_crls(crl_dir, certificates)
        for url in urls:
            try:
                result = _refresh_one(
                    url, settings=settings, crl_dir=crl_dir, certificates=certificates, current=current, now=now or utcnow()
                )
            except Exception as exc:  # one URL never stops the others
                log.exception("CRL refresh of %s failed unexpectedly", url)
                result = _result(url, ERROR, CRL_REFRESH_ERROR, f"{url}: unexpected {type(exc).__name__}: {exc}")
            log.log(
                logging.WARNING if result.problem else logging.INFO,
                "CRL %s: %s %s %s",
                url,
                result.outcome,
                result.code or "",
                result.message,
            )
            report.results.append(result)
    return report


def task_timeout(settings: Settings) -> float:
    """Enough for every URL to use its whole download time, plus a minute of checking and writing."""
    return len(settings.crl_urls) * (settings.crl_download_timeout + 5) + 60
