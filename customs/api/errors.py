"""Errors: every 4xx (and 5xx) body is {"error": {"code", "path", "message"}}."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from customs.core.db import DeclarationNotFound, database_unavailable
from customs.rules import Refused
from models.reasons import json_path

log = logging.getLogger("customs.api")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable code, e.g. UNAUTHENTICATED, DECLARANT_NOT_YOURS, JSON_INVALID.")
    path: str = Field(
        description="Where the problem is: a JSON path, a form field or a parameter; '$' for the request as a whole."
    )
    message: str = Field(description="What is wrong, for a person.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """A refusal with its HTTP status, code, path and message."""

    def __init__(self, status: int, code: str, message: str, path: str = "$", headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code} at {path}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.path = path
        self.headers = headers


NO_TOKEN = "send the client's token as 'Authorization: Bearer <token>'"
BAD_TOKEN = "the bearer token is unknown or was revoked"


class RequestTooLarge(StarletteHTTPException):
    """Raised while the body streams in, once it passes ``api_max_request_bytes``.

    An HTTPException, so that FastAPI's body reading lets it through to the handlers unchanged."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes, the most this API accepts")


def error_response(status: int, code: str, message: str, path: str = "$", headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "path": path, "message": message}}, status_code=status, headers=headers)


# While the database does not answer, every endpoint that needs it answers 503 with this many seconds in Retry-After.
DATABASE_RETRY_AFTER = 5


def database_unavailable_body(error: BaseException) -> dict[str, Any]:
    first_line = (str(getattr(error, "orig", None) or error).strip().splitlines() or [""])[0][:200]
    return {
        "error": {
            "code": "DATABASE_UNAVAILABLE",
            "path": "$",
            "message": (
                f"the database does not answer ({type(error).__name__}: {first_line}); nothing of this request was "
                f"stored: send it again in {DATABASE_RETRY_AFTER} s (Retry-After). A submission sent again is never "
                "stored twice: bytes already stored are answered 200 with their application"
            ),
        }
    }


def database_unavailable_response(error: BaseException) -> JSONResponse:
    return JSONResponse(database_unavailable_body(error), status_code=503, headers={"Retry-After": str(DATABASE_RETRY_AFTER)})


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "TOO_MANY_REQUESTS",
}

# A refusal of the rules, by what it is about (customs.rules.Refused.kind).
REFUSAL_STATUS = {"invalid": 400, "forbidden": 403, "conflict": 409, "too_large": 413}


def _loc_path(loc: tuple | list, *, in_body: bool) -> str:
    """A pydantic error location as the API names it: ``$.grounds[0]`` in a JSON body, the name of a parameter elsewhere."""
    loc = list(loc)
    if not in_body:
        if loc and loc[0] == "body":
            in_body, loc = True, loc[1:]
        elif loc and loc[0] in ("path", "query", "header", "cookie"):
            return ".".join(str(p) for p in loc[1:]) or str(loc[0])
    return json_path([p for p in loc if isinstance(p, (str, int))]) if in_body else "$"


def validation_error_body(errors: list[dict[str, Any]], *, in_body: bool = False) -> dict[str, Any]:
    """Pydantic's errors as one error: the first one's path, every problem in the message."""
    problems = []
    first_path = None
    for error in errors:
        if error.get("type") == "json_invalid":
            path = "$"
            reason = f"the body is not valid JSON: {(error.get('ctx') or {}).get('error', error.get('msg'))}"
        else:
            path = _loc_path(error.get("loc", ()), in_body=in_body)
            reason = error.get("msg", "invalid")
        first_path = first_path or path
        problems.append(f"{path}: {reason}")
    return {
        "error": {
            "code": "REQUEST_INVALID",
            "path": first_path or "$",
            "message": "; ".join(problems) or "the request is invalid",
        }
    }


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.path, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, ensure_ascii=False)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no endpoint {request.url.path}; the API lives under /v1 (see /docs)"
        elif (
            exc.status_code == 400 and message == "There was an error parsing the body"
        ):  # FastAPI's, e.g. JSON that is not UTF-8
            code, message = "REQUEST_INVALID", "the body could not be read as JSON (UTF-8 JSON is expected)"
        headers = dict(exc.headers or {})
        if exc.status_code == 401:
            headers.setdefault("WWW-Authenticate", "Bearer")
        return error_response(exc.status_code, code, message, "$", headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error_body(list(exc.errors())), status_code=422)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        return error_response(REFUSAL_STATUS[exc.kind], exc.code, exc.message, exc.path)

    @app.exception_handler(DeclarationNotFound)
    async def _not_found(request: Request, exc: DeclarationNotFound) -> JSONResponse:
        return error_response(
            404, "DECLARATION_NOT_FOUND", f"no declaration with application id or registration number {exc.key!r}", "key"
        )

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if (error := database_unavailable(exc)) is not None:
            log.warning("%s %s: 503, the database does not answer: %s", request.method, request.url.path, type(error).__name__)
            return database_unavailable_response(error)
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _internal_error()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # logged (with the traceback) by the server
        if (error := database_unavailable(exc)) is not None:  # raised wrapped, or outside the routes (the gate)
            return database_unavailable_response(error)
        return _internal_error()


def _internal_error() -> JSONResponse:
    return error_response(
        500,
        "INTERNAL_ERROR",
        "the server failed to handle the request; it was logged, nothing was half-done "
        "(every act is one transaction): try again, or report it with the time of the request",
    )


_DESCRIPTIONS = {
    400: "The request was understood but refused (see error.code); nothing was stored.",
    401: "No bearer token, or an unknown or revoked one.",
    403: "The client may not do this (wrong kind, another declarant's declaration, another office or zone).",
    404: "No declaration with that application id or registration number.",
    409: "The declaration is not in a state that allows this (already decided, not registered, ...).",
    408: "The request body did not arrive in time (too slow, a pause too long, or longer than accepted; code "
    "REQUEST_TIMEOUT): nothing was stored, the connection is closed.",
    413: "The request body, the declaration or an attachment is larger than accepted.",
    415: "The body is neither application/json nor multipart/form-data.",
    422: "The request does not match this operation's schema (code REQUEST_INVALID).",
    429: "The client is over one of its limits (code TOO_MANY_AT_ONCE, TOO_MANY_PER_MINUTE or DAILY_BYTES_EXCEEDED; "
    "the message names the limit): nothing was stored; send it again after Retry-After seconds.",
    503: "The database does not answer (code DATABASE_UNAVAILABLE): nothing was stored; send the request again after "
    "Retry-After seconds.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    documented: dict[int | str, dict[str, Any]] = {}
    with_body = (408,) if 413 in statuses else ()  # a route that takes a body: it must arrive in time
    for status in sorted({*statuses, *with_body, 503}):  # every endpoint with errors needs the database
        documented[status] = {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        if status == 401:
            documented[status]["headers"] = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}
        if status in (429, 503):
            documented[status]["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}
    return documented
