"""Written migrations: the schema changes that adding tables and columns cannot make.

``upgrade_schema`` (customs.core.db) adds new tables and new nullable columns by itself and stops start-up on
anything else. A change that drops a constraint or relaxes a column is written here instead, once, as a
named step with Alembic's operations, and recorded in ``schema_migration`` when applied, so each runs once
per database. A database created from today's models gets every step recorded as applied without running it.

Every step keeps every row: nothing already accepted is lost or changed.

- PostgreSQL: Alembic's ALTER operations, in one transaction with the record, under an advisory lock (two
  processes starting at once apply a step once).
- SQLite cannot drop a constraint or change a column with ALTER TABLE: the table is rebuilt the way SQLite
  documents it (https://www.sqlite.org/lang_altertable.html#otheralter), with foreign keys off: a new table
  from today's model, every row copied, the old one dropped, the new one renamed, its indexes created, then
  ``PRAGMA foreign_key_check``. BEGIN IMMEDIATE holds the database lock throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, Table, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateTable
from sqlmodel import Field, SQLModel

from customs.core.clock import utcnow
from models.declaration import STATUS_DDL, Declaration
from models.printing import PrintRequest
from models.types import UTCDateTime


class SchemaMigration(SQLModel, table=True):
    """The written migrations applied to this database."""

    __tablename__ = "schema_migration"

    id: str = Field(primary_key=True, max_length=80)
    applied_at: datetime = Field(sa_type=UTCDateTime)


@dataclass(frozen=True)
class Migration:
    id: str
    summary: str
    postgresql: Callable[[Operations, Connection], None]
    sqlite_tables: tuple[Table, ...]  # rebuilt from today's model on SQLite
    sqlite: Callable[[Connection], None] | None = None  # then run on SQLite (triggers, say)


def _add_missing_columns(operations: Operations, connection: Connection, table: Table) -> None:
    present = {c["name"] for c in inspect(connection).get_columns(table.name)}
    for column in table.columns:
        if column.name not in present:
            operations.add_column(table.name, column._copy())


def _resubmission_pg(operations: Operations, connection: Connection) -> None:
    table = Declaration.__table__
    for unique in inspect(connection).get_unique_constraints(table.name):
        if unique["column_names"] == ["content_sha256"]:
            operations.drop_constraint(unique["name"], table.name, type_="unique")
    _add_missing_columns(operations, connection, table)
    operations.create_unique_constraint("uq_declaration_content_attempt", table.name, ["content_sha256", "attempt"])
    present = {index["name"] for index in inspect(connection).get_indexes(table.name)}
    for index in table.indexes:  # ix_declaration_content_sha256 (and any other the model names and the table lacks)
        if index.name not in present:
            index.create(connection)


def _copy_rendered_later_pg(operations: Operations, connection: Connection) -> None:
    operations.alter_column("print_request", "pdf", nullable=True)
    operations.alter_column("print_request", "pdf_sha256", nullable=True)
    _add_missing_columns(operations, connection, PrintRequest.__table__)


def _status_audited_pg(_operations: Operations, connection: Connection) -> None:
    for statement in STATUS_DDL["postgresql"]:
        connection.exec_driver_sql(statement)


def _status_audited_sqlite(connection: Connection) -> None:
    for statement in STATUS_DDL["sqlite"]:
        connection.exec_driver_sql(statement)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "2026-11-29-declaration-resubmission",
        "the same declaration bytes may come again as a new application after a refusal for its signature: "
        "content_sha256 is unique per attempt (content_sha256, attempt), not alone; new columns attempt "
        "(1 for every existing declaration) and resubmission_of",
        _resubmission_pg,
        (Declaration.__table__,),
    ),
    Migration(
        "2026-11-29-print-copy-rendered-later",
        "a print request is recorded at once and its copy rendered in the background: print_request.pdf and "
        "pdf_sha256 may be NULL until then; new columns rendered_at, render_seconds, render_claimed_until, render_failures, "
        "render_error "
        "(existing requests keep their copy; rendered_at stays NULL for them)",
        _copy_rendered_later_pg,
        (PrintRequest.__table__,),
    ),
    Migration(
        "2026-12-06-declaration-status-audited",
        "a declaration's status changes only with its audit event: triggers refuse an UPDATE of declaration.status "
        "unless the declaration's latest transition event goes from the old status to the new one, and an INSERT of a "
        "declaration in any status but SUBMITTED (no row is changed; `customs audit verify` reports any declaration "
        "whose status already differs from its last transition)",
        _status_audited_pg,
        (),
        _status_audited_sqlite,
    ),
)


def _rebuild_sqlite_table(connection: Connection, table: Table) -> None:
    """Rebuild ``table`` as today's model defines it, keeping every row (columns the model added take their
    server default, or NULL)."""
    old_columns = {c["name"] for c in inspect(connection).get_columns(table.name)}
    new = table.to_metadata(table.metadata.__class__(), name=f"_rebuild_{table.name}")
    connection.execute(CreateTable(new))
    kept = ", ".join(f'"{c.name}"' for c in table.columns if c.name in old_columns)
    before = connection.execute(text(f'SELECT COUNT(*) FROM "{table.name}"')).scalar_one()
    connection.execute(text(f'INSERT INTO "{new.name}" ({kept}) SELECT {kept} FROM "{table.name}"'))
    after = connection.execute(text(f'SELECT COUNT(*) FROM "{new.name}"')).scalar_one()
    if before != after:
        raise RuntimeError(f"rebuilding {table.name}: {before} rows before, {after} after; nothing was changed")
    connection.execute(text(f'DROP TABLE "{table.name}"'))
    connection.execute(text(f'ALTER TABLE "{new.name}" RENAME TO "{table.name}"'))
    for index in table.indexes:
        index.create(connection)


def _applied(connection: Connection) -> set[str]:
    return set(connection.execute(text("SELECT id FROM schema_migration")).scalars())


def _record(connection: Connection, migration: Migration) -> None:
    connection.execute(
        SchemaMigration.__table__.insert().values(id=migration.id, applied_at=utcnow()),
    )


def record_all_applied(engine: Engine) -> None:
    """A database just created from today's models already has what every step makes."""
    with engine.begin() as connection:
        done = _applied(connection)
        for migration in MIGRATIONS:
            if migration.id not in done:
                _record(connection, migration)


def apply_migrations(engine: Engine) -> list[str]:
    """Apply the steps this database has not had yet, each once, in order; returns what was done."""
    done: list[str] = []
    for migration in MIGRATIONS:
        if engine.dialect.name == "postgresql":
            with engine.begin() as connection:
                connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('customs schema migrations'))"))
                if migration.id in _applied(connection):
                    continue
                migration.postgresql(Operations(MigrationContext.configure(connection)), connection)
                _record(connection, migration)
        else:
            with engine.connect() as connection:
                raw = connection.connection.dbapi_connection  # not through SQLAlchemy, which would begin a transaction
                raw.execute("PRAGMA foreign_keys=OFF")  # outside a transaction, or SQLite ignores it
                try:
                    with connection.begin():  # BEGIN IMMEDIATE: the database lock until the step is recorded
                        if migration.id in _applied(connection):
                            continue
                        for table in migration.sqlite_tables:
                            _rebuild_sqlite_table(connection, table)
                        if migration.sqlite is not None:
                            migration.sqlite(connection)
                        problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if problems:
                            raise RuntimeError(f"{migration.id}: foreign keys broken after the rebuild: {problems[:5]}")
                        _record(connection, migration)
                finally:
                    raw.execute("PRAGMA foreign_keys=ON")
        done.append(f"migration {migration.id}: {migration.summary}")
    return done
