"""The rules of clearance as plain functions of data: no Prefect, no database, no clock of their own.

Each returns what it decided and, when it refuses, ``Reason`` objects (a stable code, where, and a
message a declarant or an official understands). ``Refused`` carries one such reason as an exception,
for every layer above: intake, officials' acts, print requests and re-runs all refuse the same way.
"""

from __future__ import annotations

from typing import Literal

from models.reasons import Reason

RefusalKind = Literal["invalid", "forbidden", "conflict", "too_large"]


class Refused(Exception):
    """An input or an act the rules do not accept; nothing was changed (a refused official act is audited).

    ``kind`` says what the refusal is about, for callers that answer in their own terms (the API's HTTP
    status): ``invalid`` the input itself, ``forbidden`` who is acting, ``conflict`` the state of the
    declaration or request, ``too_large`` a size limit.
    """

    def __init__(self, reason: Reason, *, kind: RefusalKind = "invalid"):
        super().__init__(str(reason))
        self.reason = reason
        self.kind = kind

    @classmethod
    def because(cls, code: str, message: str, path: str = "$", *, kind: RefusalKind = "invalid") -> Refused:
        return cls(Reason(code=code, path=path, message=message), kind=kind)

    @property
    def code(self) -> str:
        return self.reason.code

    @property
    def path(self) -> str:
        return self.reason.path

    @property
    def message(self) -> str:
        return self.reason.message

    def as_dict(self) -> dict[str, str]:
        return self.reason.model_dump()


def combined(reasons: list[Reason]) -> Reason | None:
    """Several failed rules about one act as one reason: the first one's code and path, every message."""
    if not reasons:
        return None
    if len(reasons) == 1:
        return reasons[0]
    return Reason(code=reasons[0].code, path=reasons[0].path, message="; ".join(r.message for r in reasons))
