"""The application database: one engine per URL, transactions, schema creation, finding a declaration.

SQLite (the embedded default) runs in WAL mode and opens every transaction with BEGIN IMMEDIATE, so
writers queue on the database lock instead of failing half-way; PostgreSQL uses row locks
(SELECT ... FOR UPDATE) taken by the steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import event, inspect, or_, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, SQLModel, create_engine, select

import models.api_client
import models.official_act
import models.ops_alert
import models.outbox
import models.printing  # noqa: F401
from customs.core.migrations import apply_migrations, record_all_applied
from customs.core.settings import Settings, get_settings
from models.audit import AUDIT_DDL, AuditHead
from models.declaration import STATUS_DDL, Declaration

_engines: dict[str, Engine] = {}


def _sqlite_engine(url: str) -> Engine:
    # hide_parameters: an error's text never carries the statement's values (an IIN, a name): it reaches logs and
    # Prefect's state messages (issue 23)
    engine = create_engine(url, hide_parameters=True, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str, settings: Settings) -> Engine:
    # connect_timeout: a database host that does not answer at all is known as away within 5 s, not after the
    # operating system's TCP time-out (minutes), so that callers (the API's 503, the steps' retries) hear of it.
    engine = create_engine(
        url, hide_parameters=True, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args={"connect_timeout": 5}
    )
    idle_ms = int(settings.database_idle_transaction_timeout.total_seconds() * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # A process that stops half-way through a transaction (a host whose network stalls, then dies) would
        # hold its row locks, an office's audit chain head among them, until PostgreSQL notices the
        # connection is gone: the server ends such a transaction after this long instead.
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET idle_in_transaction_session_timeout = {idle_ms}")
        dbapi_connection.commit()

    return engine


def get_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    url = settings.sqlalchemy_url
    engine = _engines.get(url)
    if engine is None:
        if url.startswith("sqlite"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            engine = _sqlite_engine(url)
        else:
            engine = _postgres_engine(url, settings)
        _engines[url] = engine
    return engine


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


@contextmanager
def transaction(settings: Settings | None = None) -> Iterator[Session]:
    """One unit of work: commits when the block ends, rolls back on any error."""
    with Session(get_engine(settings), expire_on_commit=False) as session, session.begin():
        yield session


class SchemaMismatch(RuntimeError):
    """The database differs from the models in a way that adding tables and columns cannot fix."""


def upgrade_schema(engine: Engine) -> list[str]:
    """Bring an existing database up to the models: new tables, and new nullable columns on existing ones.

    First the written migrations this database has not had (customs.core.migrations). Then Alembic compares
    the live schema with the models; additive differences are applied with Alembic's operations, anything
    else (a dropped or retyped column, a new NOT NULL column) stops start-up with a message naming it,
    because it needs a written migration and a decision about existing rows.
    """
    fresh = not inspect(engine).has_table(Declaration.__tablename__)
    SQLModel.metadata.create_all(engine)  # new tables (and everything on a fresh database)
    if fresh:
        record_all_applied(engine)
        applied: list[str] = []
    else:
        applied = apply_migrations(engine)
    with engine.begin() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        operations = Operations(context)
        blocking = []
        for diff in compare_metadata(context, SQLModel.metadata):
            change = diff[0] if isinstance(diff, tuple) else diff[0][0]
            if change == "add_column":
                _, schema, table, column = diff
                if not column.nullable and column.server_default is None:
                    blocking.append(f"new column {table}.{column.name} is NOT NULL with no default")
                    continue
                operations.add_column(table, column._copy(), schema=schema)
                applied.append(f"added column {table}.{column.name}")
            elif change in ("remove_column", "modify_type", "modify_nullable", "modify_default"):
                blocking.append(f"{change} {diff}")
            # Indexes, constraints and tables the models no longer name are left as they are, never dropped.
        if blocking:
            raise SchemaMismatch("the database needs a migration that cannot be applied automatically: " + "; ".join(blocking))
    if engine.dialect.name == "postgresql":
        applied += _add_enum_labels(engine)
    return applied


def _add_enum_labels(engine: Engine) -> list[str]:
    """PostgreSQL keeps an enum column's values in a type of its own: a value a model's enum gained since the
    database was made (a notice's status ``withdrawn``, say) is added to that type, never removed. Additive, so
    done at every start-up for whatever is missing (Alembic's comparison does not look at enum values)."""
    wanted: dict[str, list[str]] = {}
    for table in SQLModel.metadata.tables.values():
        for column in table.columns:
            kind = column.type
            if isinstance(kind, sqlalchemy.Enum) and kind.native_enum and kind.name:
                wanted.setdefault(kind.name, list(kind.enums))
    added = []
    with engine.begin() as connection:
        present: dict[str, set[str]] = {}
        for name, label in connection.execute(
            text(
                "SELECT t.typname, e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
                "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = current_schema()"
            )
        ):
            present.setdefault(name, set()).add(label)
        for name, labels in wanted.items():
            if name not in present:  # made by create_all with every value
                continue
            for label in labels:
                if label not in present[name]:
                    connection.execute(text(f"ALTER TYPE \"{name}\" ADD VALUE IF NOT EXISTS '{label}'"))
                    added.append(f"added value {label} to enum {name}")
    return added


def init_db(settings: Settings | None = None) -> None:
    """Create or upgrade the tables, the audit chain head, the append-only guard and the guard of the declarations'
    status (idempotent: a guard dropped since is made again)."""
    engine = get_engine(settings)
    upgrade_schema(engine)
    with Session(engine) as session, session.begin():
        if session.get(AuditHead, 1) is None:
            session.add(AuditHead(id=1))
        for statement in AUDIT_DDL.get(engine.dialect.name, []) + STATUS_DDL.get(engine.dialect.name, []):
            session.connection().exec_driver_sql(statement)


def is_transient_database_error(exc: BaseException | None) -> bool:
    """Errors a retry can cure: lost connections, lock time-outs, serialisation failures, deadlocks."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    pgcode = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return pgcode in {"40001", "40P01", "55P03"}


def database_unavailable(exc: BaseException | None) -> BaseException | None:
    """The error in ``exc``'s chain (causes and contexts) saying that the database cannot be used now: a refused,
    lost or timed-out connection, a pool with no connection to give, a locked SQLite file; None if there is none."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)):
            return exc
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


# ----------------------------------------------------------------------------------------------
# Finding a declaration: by application id or registration number, the one way every caller does it


class DeclarationNotFound(LookupError):
    def __init__(self, key: str):
        super().__init__(f"no declaration with application id or registration number {key!r}")
        self.key = key


def find_declaration(session: Session, key: str, *, lock: bool = False) -> Declaration:
    """The declaration whose application id or registration number is ``key``.

    ``lock``: read it with a row lock held until the transaction ends (PostgreSQL FOR UPDATE; SQLite's
    BEGIN IMMEDIATE already holds the database's write lock), as every step and official act does before
    it changes the declaration.
    """
    query = select(Declaration).where(or_(Declaration.application_id == key, Declaration.registration_number == key))
    declaration = session.exec(query.with_for_update() if lock else query).first()
    if declaration is None:
        raise DeclarationNotFound(key)
    return declaration
