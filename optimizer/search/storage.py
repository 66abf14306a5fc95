"""Storage URLs: the study, the candidate space and the slots live in any Optuna storage: by default
SQLite in the run directory, else ``--storage URL`` (``sqlite:///``, ``postgresql://``, ``mysql://``,
``journal:PATH`` / ``*.log`` for a journal file, ``redis://`` for a Redis journal). Any failure to open
one is a ``StorageError`` whose message never shows the password."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import optuna

from ..errors import StorageError


def redact_url(url: str) -> str:
    """The URL without its password (for messages, run directories and summaries)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<storage URL>"
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


def _scrub(text: str, url: str) -> str:
    try:
        pw = urlsplit(url).password
    except ValueError:
        pw = None
    text = text.replace(url, redact_url(url))
    return text.replace(pw, "***") if pw else text


def _storage_error(url: str, exc: BaseException | str) -> StorageError:
    msg = exc if isinstance(exc, str) else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    msg = _scrub(str(msg), url)[:200]
    return StorageError(f"cannot open study storage {redact_url(url)}: {msg}", field="--storage",
                        fix="check the URL (sqlite:///FILE, postgresql://USER@HOST/DB, journal:FILE, "
                            "redis://HOST:PORT) and that the server is running and reachable")


def storage_kind(url: str) -> str:
    if url.startswith(("redis://", "rediss://", "unix://")):
        return "redis"
    if url.startswith("journal:") or (url.endswith((".log", ".journal")) and "://" not in url):
        return "journal"
    if "://" in url:
        return "rdb"
    raise StorageError(f"not a storage URL: {url!r}", field="--storage",
                       fix="use sqlite:///FILE, postgresql://USER@HOST/DB, journal:FILE or redis://HOST:PORT")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL; any failure to connect is one StorageError (password redacted)."""
    kind = storage_kind(url)
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    if kind == "journal":
        rest = url[len("journal:"):] if url.startswith("journal:") else url
        path = Path(rest[2:] if rest.startswith("//") else rest)  # journal:///abs/file or journal:rel/file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except Exception as exc:
            raise _storage_error(url, exc) from None
    if kind == "redis":
        from urllib.parse import parse_qsl, urlencode

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        prefix = query.pop("prefix", "")  # redis://HOST:PORT/DB?prefix=NAME keeps studies apart in one database
        plain = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
        try:
            import redis

            client = redis.Redis.from_url(plain, socket_connect_timeout=5, socket_timeout=10)
            client.ping()
            client.close()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return JournalStorage(JournalRedisBackend(plain, prefix=prefix))
        except ImportError:
            raise StorageError("Redis storage needs the `redis` package", field="--storage",
                               fix="pip install redis") from None
        except Exception as exc:
            raise _storage_error(url, exc) from None
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    given = url
    if url.startswith(("postgresql", "postgres")):
        engine_kwargs["connect_args"] = {"connect_timeout": 5}
        url = _postgres_driver(url)
    last: BaseException | None = None
    for attempt in range(4):  # several workers creating the schema at once race; the loser retries
        try:
            storage = RDBStorage(url, engine_kwargs=engine_kwargs)
            if url.startswith("sqlite"):
                _sqlite_wal(storage)
            return storage
        except Exception as exc:
            last = exc
            text = str(exc).lower()
            if any(s in text for s in ("connection refused", "could not connect", "could not translate",
                                       "does not exist", "unable to open", "timeout", "password", "no such",
                                       "authentication", "can't load plugin", "no module named")):
                break
            time.sleep(0.5 + attempt)
    msg = last if last is not None else "unknown error"
    if isinstance(msg, BaseException):
        msg = _scrub((str(msg).strip().splitlines() or [type(msg).__name__])[0], url)
    raise _storage_error(given, msg) from None


def _postgres_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when that is what is installed."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if "+" in scheme or not sep:
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    if importlib.util.find_spec("psycopg") is None:
        raise StorageError("PostgreSQL storage needs a driver (psycopg2 or psycopg)", field="--storage",
                           fix="pip install 'prompt-optimizer[distributed]' (psycopg2-binary)")
    return f"postgresql+psycopg://{rest}"


def _sqlite_wal(storage: Any) -> None:
    """WAL journal, no fsync per commit: a trial reports every example, and a commit that waits for the
    disk costs ~10 ms. A killed process (SIGKILL included) loses nothing in WAL mode; only a power cut
    can drop the last commits, which a resume then redoes from the response cache."""
    from sqlalchemy import event

    def on_connect(dbapi_con, _record):
        cur = dbapi_con.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()
