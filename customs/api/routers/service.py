"""The service itself."""

from __future__ import annotations

from fastapi import APIRouter

from customs.api.schemas import HealthOut

router = APIRouter(tags=["service"])


@router.get("/v1/health", response_model=HealthOut, summary="Liveness (no authentication)")
def health() -> dict[str, str]:
    return {"status": "ok"}
