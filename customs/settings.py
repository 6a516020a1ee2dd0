"""All settings in one place (environment prefix ``CUSTOMS_``)."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from customs import PROJECT_ROOT


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CUSTOMS_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Where the SQLite database, the Prefect home and the demo PKI live.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the application database; default: SQLite file customs.db under data_dir. "
        "postgresql://user@host/db is accepted and uses psycopg 3.",
    )
    reference_dir: Path = Field(PROJECT_ROOT / "reference", description="Offices, zones and risk profiles (JSON data files).")

    trust_dir: Path | None = Field(None, description="Directory of trusted root and intermediate CA certificates (PEM or DER).")
    crl_dir: Path | None = Field(None, description="Directory of CRLs (PEM or DER) of the trusted CAs.")
    require_non_repudiation: bool = Field(True, description="Require nonRepudiation in the signer's keyUsage (NCA SIGN certificates).")
    require_crl: bool = Field(True, description="Refuse a signature whose issuing CA has no CRL in crl_dir (fail closed).")

    max_declaration_bytes: int = Field(5 * 1024 * 1024, gt=0)
    max_attachment_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_attachments: int = Field(50, gt=0)

    registration_deadline: timedelta = Field(timedelta(hours=2), description="EAEU: registration or refusal within 2 hours of submission.")
    release_deadline: timedelta = Field(timedelta(hours=4), description="EAEU art. 119: release within 4 hours of registration.")

    prefect_api_url: str | None = Field(
        None, description="Prefect API to record flow runs in; default: the local server the CLI starts under data_dir."
    )
    prefect_port: int = Field(4200, description="Port of the local Prefect server started by the CLI.")

    @field_validator("data_dir", "reference_dir", "trust_dir", "crl_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url or f"sqlite:///{self.data_dir / 'customs.db'}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    @property
    def demo_pki_dir(self) -> Path:
        return self.data_dir / "demo-pki"


_override: Settings | None = None


@lru_cache(maxsize=1)
def _from_environment() -> Settings:
    return Settings()


def get_settings() -> Settings:
    """The settings in force: an explicit configuration (tests, the demo) or the environment."""
    return _override if _override is not None else _from_environment()


def configure(settings: Settings | None) -> None:
    """Put ``settings`` in force for this process (``None`` goes back to the environment)."""
    global _override
    _override = settings
    _from_environment.cache_clear()
