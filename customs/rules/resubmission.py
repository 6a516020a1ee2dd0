"""The same declaration bytes submitted again: the earlier application, or a new one.

Identical bytes are one application: submitting them again (a retry, a double click, a lost answer) returns
the application they made, whatever its state and whatever signature comes with them. One exception: when
that application was refused registration for its signatures alone (an expired certificate, a signer who may
not act for the declarant, a weak algorithm...), the declarant corrects the signature, not the declaration.
The same bytes with a different signature (of the declaration or of an attachment) are then a new
application, which names the refused one (``resubmission_of``). With the same signatures they would only be
refused again, so the refused application is returned.

A refusal for anything in the document itself needs new bytes, which make a new application anyway.
At most ``limit`` applications per declaration bytes: past that, ``RESUBMISSIONS_EXHAUSTED``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from customs.rules import Refused


@dataclass(frozen=True)
class EarlierApplication:
    application_id: str
    status: str
    attempt: int
    signature_valid: bool | None
    reasons: Sequence[dict[str, Any]]  # why registration was refused
    signature_reasons: Sequence[dict[str, Any]]  # the part of those that the signature check found
    signatures: tuple[bytes | None, ...]  # the declaration's, then each attachment's


def refused_for_signatures_only(earlier: EarlierApplication) -> bool:
    if earlier.status != "registration_refused" or earlier.signature_valid is not False or not earlier.signature_reasons:
        return False
    signature_keys = {(r.get("code"), r.get("path")) for r in earlier.signature_reasons}
    return all((r.get("code"), r.get("path")) in signature_keys for r in earlier.reasons)


def is_new_application(earlier: EarlierApplication, signatures: tuple[bytes | None, ...], *, limit: int) -> bool:
    """True: store the bytes again as application ``earlier.attempt + 1``; False: answer with ``earlier``.

    Raises ``RESUBMISSIONS_EXHAUSTED`` when a new application would pass ``limit``."""
    if not refused_for_signatures_only(earlier) or signatures == earlier.signatures:
        return False
    if earlier.attempt >= limit:
        raise Refused.because(
            "RESUBMISSIONS_EXHAUSTED",
            f"these declaration bytes were refused for their signatures {earlier.attempt} times (the last: application "
            f"{earlier.application_id}); at most {limit} applications are made of the same bytes: contact the support "
            "service, or submit a new declaration",
            "signature",
            kind="conflict",
        )
    return True
