"""Notices as e-mails: the template context of a notice, and the message built from it.

Pure functions of data: a notice, the declaration it is about, and the reference data give the same
message, byte for byte, every time (Date from the notice's creation, Message-ID from its uid, MIME
boundaries from its uid), so a notice sent again after a crash is the same e-mail.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from customs.core.clock import kz_local
from customs.core.paths import TEMPLATES_DIR
from customs.notices.catalogue import localised_reasons, payment_name, step_name
from customs.rules.bidi import has_bidi_controls, shown_as_stored
from customs.rules.places import place_of
from customs.rules.release import unpaid_payments
from models.document import parse_declaration
from models.outbox import DECISION_KINDS, Notice, NoticeKind, addressee_of
from models.reference import Office, ReferenceData

DECISION_SCHEMA = "kz.customs/decision@1"

SERVICE_NAMES = {
    "kk": "Тауарларды кедендік ресімдеу",
    "ru": "Таможенное оформление товаров",
    "en": "Customs clearance of goods",
}


def _parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def kz_time(value: Any) -> str:
    moment = _parse_time(value)
    return "" if moment is None else kz_local(moment).strftime("%d.%m.%Y %H:%M (UTC+5)")


def kz_day(value: Any) -> str:
    moment = _parse_time(value)
    return "" if moment is None else kz_local(moment).strftime("%d.%m.%Y")


def shown_as_stored_value(value: Any) -> Any:
    """Every ``{{ ... }}`` of every template, before it is escaped: a bidirectional control in it (a declarant's name, a
    goods description, any value at all) is shown as ``[U+202E]`` instead of reordering the text around it
    (customs.rules.bidi). Markup (a macro's output, already shown this way) stays Markup: the escapes hold no HTML."""
    if value is None or isinstance(value, int | float):
        return value
    text = str(value)
    if not has_bidi_controls(text):
        return value
    return Markup(shown_as_stored(text)) if isinstance(value, Markup) else shown_as_stored(text)


@lru_cache(maxsize=4)
def template_environment(directory: Path = TEMPLATES_DIR) -> Environment:
    """HTML templates (``*.html.j2``) autoescape; plain-text ones do not. Unknown variables are errors. Whatever a
    template prints shows bidirectional controls as escapes (``shown_as_stored_value``): letters, paper copies and
    reports read in the stored order."""
    env = Environment(
        loader=FileSystemLoader(str(directory)),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=shown_as_stored_value,
    )
    env.filters["kz_time"] = kz_time
    env.filters["kz_date"] = kz_day
    return env


@dataclass(frozen=True)
class DeclarationFacts:
    """What a notice may say about its declaration: fields that never change once written."""

    application_id: str
    channel: str
    submitted_at: datetime
    sha256: str
    customs_office: str | None
    registration_number: str | None
    content: bytes

    @classmethod
    def of(cls, declaration) -> DeclarationFacts:
        return cls(
            application_id=declaration.application_id,
            channel=declaration.channel,
            submitted_at=declaration.submitted_at,
            sha256=declaration.content_sha256,
            customs_office=declaration.customs_office,
            registration_number=declaration.registration_number,
            content=declaration.content,
        )


def _localised_grounds(grounds: list[dict[str, Any]], language: str, reference: ReferenceData | None) -> list[dict[str, Any]]:
    """Grounds as {code, title} in the notice's language: from the facts (which keep every language), else
    from the reference data's ground of that code, else as the facts wrote it."""
    result = []
    for ground in grounds:
        title = ground.get("title")
        known = reference.grounds.get(str(ground.get("code"))) if reference else None
        if isinstance(title, dict) and title.get(language):
            title = title[language]
        elif known is not None and known.title.get(language):
            title = known.title[language]
        elif isinstance(title, dict):
            title = title.get("ru") or next(iter(title.values()), "")
        result.append({"code": ground.get("code"), "title": title or ""})
    return result


def _zone_name(office: Office | None, code: str | None, language: str) -> str | None:
    zone = office.zone(code) if office else None
    return zone.name_in(language) if zone else None


def unpaid_in(content: bytes, language: str) -> list[dict[str, str]]:
    """The box-47 payments of the stored declaration with no proof of payment, named in ``language``
    ({name: "платёж 5010 (НДС)", amount, currency}): what release waits for (customs.rules.release)."""
    try:
        data = json.loads(content.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return []
    doc, _ = parse_declaration(data) if isinstance(data, dict) else (None, [])
    if doc is None:
        return []
    return [
        {"name": payment_name(payment.code, language), "amount": str(payment.amount), "currency": payment.currency}
        for _, payment in unpaid_payments(doc)
    ]


def notice_context(notice: Notice, declaration: DeclarationFacts, reference: ReferenceData | None) -> dict[str, Any]:
    """The variables of the notice's templates (see templates/notices/)."""
    facts = dict(notice.facts)
    who = addressee_of(declaration.content)
    office = reference.offices.get(declaration.customs_office) if reference and declaration.customs_office else None
    language = notice.language
    event_at = facts.get("event_at") or notice.created_at.isoformat()
    context: dict[str, Any] = {
        "lang": notice.language,
        "kind": str(notice.kind),
        "service_name": SERVICE_NAMES[notice.language],
        "application_id": declaration.application_id,
        # The number as it was when the notice was queued: a resend is the same message.
        "registration_number": facts.get("registration_number", declaration.registration_number),
        "declarant_name": who["name"] or "",
        "declarant_id": who["id"],
        "customs_office": declaration.customs_office,
        "office_name": office.name_in(language) if office else None,
        "channel": declaration.channel,
        "submitted_at": declaration.submitted_at.isoformat(),
        "sha256": declaration.sha256,
        "event_at": event_at,
    }
    official_id = facts.get("official_id") or (facts.get("actor") if facts.get("actor") not in (None, "system") else None)
    kind = NoticeKind(notice.kind)
    if kind == NoticeKind.REGISTRATION:
        context.update(
            registered_at=facts.get("registered_at") or event_at,
            release_due_at=facts.get("release_due_at"),
            unpaid=unpaid_in(declaration.content, language),
        )
    elif kind == NoticeKind.AWAITING_OFFICIAL:
        reasons = [r for r in facts.get("reasons", []) if isinstance(r, Mapping)]
        context.update(
            registered_at=facts.get("registered_at"),
            release_due_at=facts.get("release_due_at"),
            lane=facts.get("lane"),
            zone_name=_zone_name(office, facts.get("zone"), language),
            reasons=localised_reasons(reasons, language),
            unpaid=unpaid_in(declaration.content, language),
        )
    elif kind == NoticeKind.REGISTRATION_REFUSAL:
        reasons = [r for r in facts.get("reasons", []) if isinstance(r, Mapping)]
        context.update(
            reasons=localised_reasons(reasons, language),
            refused_at=event_at,
            # refused for signatures alone: the same bytes may come again with a new signature (customs.rules.resubmission)
            signature_only=bool(reasons)
            and all(r.get("path") == "declaration" or place_of(r.get("path")).key == "attachment" for r in reasons),
        )
    elif kind == NoticeKind.RELEASE:
        automatic = bool(facts.get("automatic", facts.get("decided_by") == "system"))
        context.update(
            decision_code=facts.get("decision_code"),
            decided_at=facts.get("decided_at") or event_at,
            automatic=automatic,
            official_id=None if automatic else official_id or facts.get("decided_by"),
            official_name=None if automatic else facts.get("official_name"),
            zone=facts.get("zone"),
            zone_name=_zone_name(office, facts.get("zone"), language),
        )
    elif kind == NoticeKind.RELEASE_REFUSAL:
        context.update(
            decided_at=facts.get("decided_at") or event_at,
            official_id=official_id or facts.get("decided_by"),
            official_name=facts.get("official_name"),
            grounds=_localised_grounds(facts.get("grounds", []), language, reference),
            grounds_text=facts.get("grounds_text") or "",
        )
    elif kind == NoticeKind.RELEASE_CANCELLATION:
        context.update(
            cancelled_at=event_at,
            official_id=official_id,
            official_name=facts.get("official_name"),
            grounds=_localised_grounds(facts.get("grounds", []), language, reference),
            grounds_text=facts.get("grounds_text") or "",
            decision_code=facts.get("decision_code"),
        )
    elif kind == NoticeKind.FAILURE_REPORTED:
        context.update(
            report_id=facts["report_id"],
            failed_step=facts["failed_step"],
            failed_step_name=step_name(facts["failed_step"], language),
        )
    elif kind == NoticeKind.SUPPORT_REPORT:
        context.update(
            report_id=facts["report_id"],
            failed_step=facts["failed_step"],
            failed_step_name=step_name(facts["failed_step"], language),
            flow_run_id=facts.get("flow_run_id"),
            occurred_at=facts.get("occurred_at") or event_at,
            error_description=facts["error_description"],
            attachments=list(facts.get("attachments", [])),
        )
    elif kind == NoticeKind.RELEASE_DEADLINE_ALERT:
        context.update(
            recipient_name=facts.get("recipient_name") or "",
            zone=facts.get("zone"),
            zone_name=_zone_name(office, facts.get("zone"), language),
            lane=facts.get("lane"),
            registered_at=facts.get("registered_at"),
            deadline_at=facts["deadline_at"],
            minutes_left=int(facts["minutes_left"]),
            waiting_reasons=localised_reasons(facts.get("waiting_reasons", []), language),
            stage=facts.get("stage") or ("breach" if int(facts["minutes_left"]) <= 0 else "alert"),
        )
    elif kind == NoticeKind.REGISTRATION_DEADLINE_ALERT:
        context.update(
            status=facts["status"],
            deadline_at=facts["deadline_at"],
            minutes_left=int(facts["minutes_left"]),
            stage=facts["stage"],
        )
    elif kind == NoticeKind.PRINT_REQUEST_ACCEPTED:
        context.update(
            request_id=facts["request_id"],
            requested_at=facts["requested_at"],
            due_at=facts["due_at"],
            requested_by=facts.get("requested_by"),
            pages_sha256=facts.get("pdf_sha256"),  # requests before copies were rendered apart
        )
    elif kind == NoticeKind.PRINT_DEADLINE_ALERT:
        context.update(
            recipient_name=facts.get("recipient_name") or "",
            request_id=facts["request_id"],
            requested_at=facts["requested_at"],
            due_at=facts["due_at"],
            minutes_left=int(facts["minutes_left"]),
            stage=facts["stage"],
        )
    return context


def decision_document(notice: Notice, context: dict[str, Any]) -> dict[str, Any]:
    """The decision as a machine-readable JSON attachment (release, refusal to release, cancellation)."""
    kind = NoticeKind(notice.kind)
    return {
        "schema": DECISION_SCHEMA,
        "decision": {
            NoticeKind.RELEASE: "release",
            NoticeKind.RELEASE_REFUSAL: "release_refusal",
            NoticeKind.RELEASE_CANCELLATION: "release_cancellation",
        }[kind],
        "application_id": context["application_id"],
        "registration_number": context["registration_number"],
        "customs_office": context["customs_office"],
        "declarant_id": context["declarant_id"],
        "declaration_sha256": context["sha256"],
        "decision_code": context.get("decision_code"),
        "decided_at": context.get("decided_at") or context.get("cancelled_at"),
        "automatic": context.get("automatic", False),
        "official_id": context.get("official_id"),
        "grounds": [{k: g.get(k) for k in ("code", "title", "legal_basis") if k in g} for g in notice.facts.get("grounds", [])],
        "grounds_text": context.get("grounds_text", ""),
        "notice_id": notice.uid,
    }


DECISION_FILE = "decision.json"
DECISION_SIGNATURE_FILE = "decision.json.p7s"


def decision_json(notice: Notice, context: dict[str, Any]) -> bytes:
    """The bytes of decision.json, as attached to the letter (and signed by the authority)."""
    return json.dumps(decision_document(notice, context), ensure_ascii=False, indent=2).encode("utf-8")


def decision_json_of(notice: Notice, declaration: DeclarationFacts, reference: ReferenceData | None) -> bytes:
    return decision_json(notice, notice_context(notice, declaration, reference))


@dataclass(frozen=True)
class RenderedNotice:
    subject: str
    text: str
    html: str


def render_notice(context: dict[str, Any], env: Environment | None = None) -> RenderedNotice:
    env = env or template_environment()
    base = f"notices/{context['lang']}/{context['kind']}"
    text_template = env.get_template(f"{base}.txt.j2")
    subject = "".join(text_template.blocks["subject"](text_template.new_context(context))).strip()
    subject = " ".join(subject.split())  # one header line, whatever the template's whitespace
    return RenderedNotice(
        subject=subject,
        text=text_template.render(context),
        html=env.get_template(f"{base}.html.j2").render(context),
    )


class FoldedHeader:
    """A header value that folds itself: the standard library's folder puts a long subject on a line of
    its own (the receiver reads it with a leading space) and drops the space between two encoded words
    (Kazakh and Russian subjects lost a space). Folded here with ``email.header.Header``: plain ASCII
    words when every word fits on a line, UTF-8 encoded words otherwise; it reads back exactly."""

    def __init__(self, name: str, value: str):
        self.name, self.value = name, value

    def fold(self, *, policy: Policy) -> str:
        limit = policy.max_line_length or 78
        if self.value.isascii() and all(len(word) + 1 + len(self.name) + 2 <= limit for word in self.value.split()):
            charset = "us-ascii"
        else:
            charset = "utf-8"
        folded = Header(self.value, charset, header_name=self.name).encode(linesep=policy.linesep, maxlinelen=limit)
        return f"{self.name}: {folded}{policy.linesep}"

    def __str__(self) -> str:
        return self.value


def sender_address(sender: str, names: Mapping[str, str] | None, language: str) -> str | Address:
    """The From: of a notice: the address of ``sender`` with the display name of the notice's language."""
    name = (names or {}).get(language)
    address = parseaddr(sender)[1]
    if not name or not address:
        return sender
    local, _, domain = address.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def message_id(notice: Notice, domain: str) -> str:
    return f"<{notice.message_id_local}@{domain}>"


def build_system_message(
    notice: Notice, *, sender: str, domain: str, sender_names: Mapping[str, str] | None = None
) -> EmailMessage:
    """The e-mail of a notice about the service itself (``SYSTEM_KINDS``: to the operations mailbox), rendered from
    its facts alone; the same bytes every time, like every notice."""
    facts = dict(notice.facts)
    context = {
        "lang": notice.language,
        "kind": str(notice.kind),
        "service_name": SERVICE_NAMES[notice.language],
        "application_id": "—",
        "what": facts.get("what", ""),
        "lines": [str(line) for line in facts.get("lines", [])],
        "noticed_by": facts.get("noticed_by"),
        "at": facts.get("at") or notice.created_at.isoformat(),
    }
    message = _begun(notice, render_notice(context), sender=sender, domain=domain, sender_names=sender_names)
    return _finished(message, notice)


def _begun(
    notice: Notice,
    rendered: RenderedNotice,
    *,
    sender: str,
    domain: str,
    sender_names: Mapping[str, str] | None,
    application_id: str | None = None,
) -> EmailMessage:
    """A notice's e-mail with its headers and its text and HTML parts (attachments may follow)."""
    message = EmailMessage()
    message["From"] = sender_address(sender, sender_names, notice.language)
    message["To"] = notice.recipient
    message["Subject"] = FoldedHeader("Subject", rendered.subject)
    message["Date"] = format_datetime(notice.created_at)
    message["Message-ID"] = message_id(notice, domain)
    message["Auto-Submitted"] = "auto-generated"
    if application_id is not None:
        message["X-Customs-Application-Id"] = application_id
    message["X-Customs-Notice"] = f"{notice.kind}; id={notice.uid}"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


def _finished(message: EmailMessage, notice: Notice) -> EmailMessage:
    """Its language (after the parts: set_content() drops Content-* headers) and boundaries fixed by the notice's
    uid, so the same notice is the same bytes every time."""
    message["Content-Language"] = notice.language
    for index, part in enumerate(message.walk()):
        if part.is_multipart():
            part.set_boundary(f"=_{notice.uid}_{index}")
    return message


def build_message(
    notice: Notice,
    declaration: DeclarationFacts,
    reference: ReferenceData | None,
    *,
    sender: str,
    domain: str,
    sender_names: Mapping[str, str] | None = None,
    attachments: list[tuple[str, str, bytes]] = (),
) -> EmailMessage:
    """The whole e-mail of a notice: the same bytes for the same notice, every time. The From: is ``sender``'s
    address under the name ``sender_names`` gives for the notice's language (``sender`` as is without one)."""
    context = notice_context(notice, declaration, reference)
    rendered = render_notice(context)
    message = _begun(
        notice, rendered, sender=sender, domain=domain, sender_names=sender_names, application_id=declaration.application_id
    )
    if notice.kind in DECISION_KINDS:
        # decision.json as fixed with the notice (customs.services.outbox keeps it with its signature, so that every
        # attempt sends the same bytes); rendered here for a notice that has none stored
        if not any(name == DECISION_FILE for name, _, _ in attachments):
            body = decision_json(notice, context)
            message.add_attachment(body, maintype="application", subtype="json", filename=DECISION_FILE)
        signed = any(name == DECISION_SIGNATURE_FILE for name, _, _ in attachments)
        message["X-Customs-Authority-Signature"] = (
            f"{DECISION_SIGNATURE_FILE} (detached CMS)" if signed else "none: not signed by the authority"
        )
    for filename, content_type, content in attachments:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype or "octet-stream", filename=filename)
    return _finished(message, notice)
