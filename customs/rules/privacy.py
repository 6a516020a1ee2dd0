"""Private persons' data out of what Prefect shows (issue 23, part 4): run names, tags, parameters, logs and
artifacts are read by operations staff who need the declaration, not the person behind it.

- An IIN (a person's number, 12 digits: birth date YYMMDD first, so its fifth digit, the first of the day, is 0-3)
  is masked to its first four and last two digits: 860101300123 -> 8601******23. A BIN (a legal entity's, fifth digit
  4, 5 or 6: the kind of entity) is not private and stays.
- A person's name is shortened to initials: "Тестов Тест Тестович" -> "Т. Т. Т.". In a certificate subject
  (RFC 4514: ``CN=...,SERIALNUMBER=IIN...``) the person's attributes (CN, SN, GN, G, SURNAME, GIVENNAME) are; the
  organisation's (O, OU: a BIN) stay.
- An e-mail address keeps its first character and its domain: testov@example.kz -> t***@example.kz.

Plain functions of text; the database keeps everything as it was (officials and the declarant read it there).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

# 12 digits not part of a longer number, the fifth 0-3: an IIN (NCA puts "IIN" before it in SERIALNUMBER).
# Twelve digits standing alone or after NCA's "IIN" (SERIALNUMBER=IIN...): not a run of digits inside a longer token
# (a certificate's hexadecimal serial, a hash)
_IIN = re.compile(r"(?:(?<=IIN)|(?<![0-9A-Za-z]))(\d{4})([0-3]\d{5})(\d{2})(?![0-9A-Za-z])")
# A person's attribute in an RFC 4514 subject: its value runs to the next unescaped , or +.
_PERSON_ATTRIBUTE = re.compile(r"\b(CN|SN|GN|G|SURNAME|GIVENNAME|commonName|surname|givenName)=((?:\\.|[^,+\\])+)")
_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")


def is_iin(number: str) -> bool:
    """A private person's number (IIN), as opposed to a legal entity's (BIN): 12 digits, the fifth 0-3."""
    return len(number) == 12 and number.isdigit() and number[4] in "0123"


def mask_iin(iin: str) -> str:
    """8601******23: enough for a person who holds the declaration to tell two apart, not to know whose it is."""
    return f"{iin[:4]}{'*' * 6}{iin[-2:]}" if len(iin) == 12 else "*" * len(iin)


def initials(name: str) -> str:
    """A person's name as initials: "Тестов Тест Тестович" -> "Т. Т. Т."; nothing for an empty name."""
    return " ".join(f"{part[0].upper()}." for part in re.split(r"[\s,]+", name.strip()) if part and part[0].isalpha())


def mask_private(text: str, names: Iterable[str | None] = ()) -> str:
    """``text`` with every IIN masked, the person's attributes of certificate subjects and each of ``names`` (the
    persons this text may name: an individual declarant, a signer's CN) shortened to initials, and e-mail
    addresses masked. BINs, organisation names and everything else stay."""
    if not text:
        return text
    for name in sorted({n.strip() for n in names if n and n.strip()}, key=len, reverse=True):
        text = re.sub(re.escape(name), initials(name), text, flags=re.IGNORECASE)
    text = _PERSON_ATTRIBUTE.sub(lambda m: f"{m.group(1)}={initials(m.group(2).replace(chr(92), ''))}", text)
    text = _IIN.sub(lambda m: mask_iin(m.group(0)), text)
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)


class PrivateDataFilter(logging.Filter):
    """Masks (``mask_private``) every record of the loggers it is on, message and traceback, before any handler
    sees it: Prefect's handler that sends the run logs to its API, and the support report's capture."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is left to its handlers' own error handling
            return True
        masked = mask_private(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_private(record.exc_text)
        return True


# The loggers of flow and task runs (get_run_logger, and the engine's own messages about a run): what Prefect stores
# as the runs' logs.
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def mask_run_logs() -> None:
    """Put the filter on the run loggers of this process (once)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, PrivateDataFilter) for f in logger.filters):
            logger.addFilter(PrivateDataFilter())


def describe_signature(summary: dict) -> str:
    """One signature as the run's log and artifact show it (a verdict's ``summary()``, as the declaration keeps it):
    what was signed, by whom (the person's name as initials, the IIN masked, the BIN as it is), in which NCA role,
    and whether it held: ``declaration: Т. Т. (IIN 8601******23, BIN 990840000123; first head) valid``. A certificate
    with no IIN and a BIN is the organisation's own: its name stays."""
    from customs.rules.signers import LEGAL_ENTITY, ROLE_NAMES

    signer = summary.get("signer") or {}
    what = str(summary.get("document") or "document")
    verdict = "valid" if summary.get("valid") else "NOT valid"
    if not signer:
        return f"{what}: no readable signer, {verdict}"
    ids = [f"IIN {mask_iin(signer['iin'])}" if signer.get("iin") else "", f"BIN {signer['bin']}" if signer.get("bin") else ""]
    roles = [ROLE_NAMES.get(r, r) for r in signer.get("roles") or () if r != LEGAL_ENTITY]
    about = "; ".join(filter(None, [", ".join(filter(None, ids)), ", ".join(roles) or "no NCA role"]))
    name = str(signer.get("name") or "")
    if signer.get("iin") or not signer.get("bin"):  # a person holds the certificate (an entity's names its employee)
        name = initials(name)
    return mask_private(f"{what}: {name or 'no name'} ({about}) {verdict}", [signer.get("name")] if signer.get("iin") else ())
