"""The intake HTTP API: submissions, status, print requests and officials' acts over HTTPS + bearer tokens.

``create_app()`` builds the FastAPI application; ``customs serve`` runs it under uvicorn. Everything
the API does is a use case of ``customs.services``: the same functions the CLI calls, so the rules, the
audit chain and the notices are the same whichever way a declaration comes in. Who may do what:
``customs.api.auth``; what runs the clearance afterwards: the hooks of ``customs.api.hooks``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

from customs.api.bodies import few_malloc_arenas
from customs.api.errors import install_error_handlers
from customs.api.hooks import no_hook
from customs.api.limits import RequestGate
from customs.api.routers import declarations, documents, officials, ops, service
from customs.api.schemas import SUBMISSION_FORM_SCHEMA, SubmissionIn

API_TITLE = "Customs clearance intake API"
API_VERSION = "1"


def create_app(
    *, start_clearance: Callable[[str], Any] | None = None, decision_given: Callable[[str], Any] | None = None
) -> FastAPI:
    """The intake API. The hooks may also be set later on ``app.state`` (sync or async callables)."""
    few_malloc_arenas()  # large bodies are decoded in threads: their freed memory goes back (customs.api.bodies)
    app = FastAPI(
        docs_url=None,  # served by serve_docs_offline: FastAPI's own page loads Swagger UI from a CDN
        redoc_url=None,
        title=API_TITLE,
        version=API_VERSION,
        description="Submission of customs declarations (electronic, portal, paper entry), their status, paper copies, "
        "and officials' decisions. Authenticate with `Authorization: Bearer <token>` (tokens from `customs clients add`). "
        'Every error is `{"error": {"code", "path", "message"}}`.',
    )
    app.state.start_clearance = start_clearance or no_hook
    app.state.decision_given = decision_given or no_hook
    app.state.print_requested = no_hook  # (request_id, alert_at, due_at): `customs serve` schedules the deadline timers
    app.state.dependencies = {}  # name -> callable giving its state for /v1/health/ready (`customs serve`: prefect)
    app.add_middleware(RequestGate)
    install_error_handlers(app)
    for router in (service.router, declarations.router, officials.router, documents.router, ops.router):
        app.include_router(router)
    document_submission_schemas(app)
    serve_docs_offline(app)
    return app


DOCS_ASSETS = "/docs-assets"


DOCS_STATIC = Path(fastapi_offline.__file__).parent / "static"  # Swagger UI 5 (reads OpenAPI 3.1) and ReDoc 2, as files


def serve_docs_offline(app: FastAPI) -> None:
    """/docs (Swagger UI 5) and /redoc (ReDoc 2) with their scripts and styles from the fastapi-offline package, served
    here: the pages work where there is no internet (FastAPI's default pages take them from cdn.jsdelivr.net and stay
    blank), and they read FastAPI's OpenAPI 3.1 (the Swagger UI 4.15 of swagger-ui-bundle could not: "Unable to
    render this definition")."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=DOCS_STATIC), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title}: documentation",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title}: reference",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def document_submission_schemas(app: FastAPI) -> None:
    """The two bodies of POST /v1/declarations are read by hand (one endpoint, two media types): name their schemas."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "DeclarationSubmission" not in components:
            submission = SubmissionIn.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(submission.pop("$defs", {}))
            components["DeclarationSubmission"] = submission
            components["DeclarationSubmissionForm"] = SUBMISSION_FORM_SCHEMA
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
