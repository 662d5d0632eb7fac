"""One watch daemon per project on a server database, seen from every machine.

The daemon's state file is flock-ed too, but a file lock is only visible on its own host; labs
sharing a PostgreSQL catalog run daemons (and ``status``) on different machines.
"""

from __future__ import annotations

import contextlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..catalog.locks import LOCK_NAMESPACE, pg_try_lock, pg_unlock
from ..errors import CatalogError

DAEMON_NAMESPACE = LOCK_NAMESPACE + 1  # first key of the watch daemon's advisory lock
_APP_PREFIX = "copick-catalog watch"


class DaemonClaim:
    """A PostgreSQL session advisory lock that says "a watch daemon serves this project".

    The daemon's state file is flock-ed too, but a file lock is only visible on its own host; labs
    sharing a PostgreSQL catalog run daemons (and ``status``) on different machines. The lock lives on
    a dedicated connection whose ``application_name`` names the host and pid, so ``status`` anywhere
    can say who holds it, and the server drops it when that process dies. If the connection breaks
    (a database outage), :meth:`keep` takes the lock again once the server is back.
    """

    def __init__(self, engine: Engine, project_id: int, host: str, pid: int) -> None:
        self.engine = engine
        self.project_id = project_id
        self.app_name = f"{_APP_PREFIX} {host} pid {pid}"[:63]  # PostgreSQL truncates at 63 bytes
        self._conn: sa.Connection | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`CatalogError` naming the daemon that holds it."""
        if not self._try():
            holder = daemon_holder(self.engine, self.project_id)
            who = holder["application_name"] if holder else "another process"
            raise CatalogError(
                f"a watch daemon ({who}, seen through PostgreSQL) already serves project "
                f"{self.project_id} of this catalog; stop it first"
            )

    def keep(self) -> bool:
        """Check the lock is still held (called from the heartbeat); retake it after an outage.

        Returns False while it cannot be held: the database is unreachable, or another daemon took
        over meanwhile.
        """
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT 1")).scalar()
                self._conn.commit()
                return True
            except sa.exc.SQLAlchemyError:
                self._close()
        try:
            return self._try()
        except sa.exc.SQLAlchemyError:
            self._close()
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                pg_unlock(self._conn, DAEMON_NAMESPACE, self.project_id)
        self._close()

    def _try(self) -> bool:
        conn = self.engine.connect()
        try:
            conn.execute(sa.text("SELECT set_config('application_name', :name, false)"), {"name": self.app_name})
            got = pg_try_lock(conn, DAEMON_NAMESPACE, self.project_id)
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()  # a broken or finished session must not return to the pool
                self._conn.close()
            self._conn = None


def daemon_holder(engine: Engine, project_id: int) -> dict[str, Any] | None:
    """The session holding a project's watch-daemon lock on PostgreSQL (any host), or None.

    Advisory locks belong to one database, while ``pg_locks`` lists the whole server's: hence the filter.
    """
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        row = (
            conn.execute(
                sa.text(
                    "SELECT a.application_name, host(a.client_addr) AS client_addr, "
                    "extract(epoch FROM a.backend_start)::float8 AS since "
                    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :ns AND l.objid = :pid "
                    "AND l.objsubid = 2 "
                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"ns": DAEMON_NAMESPACE, "pid": project_id},
            )
            .mappings()
            .first()
        )
    return dict(row) if row is not None else None


__all__ = ["DAEMON_NAMESPACE", "DaemonClaim", "daemon_holder"]
