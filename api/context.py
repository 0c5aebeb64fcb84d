"""What a request handler reaches through the current app, in one place."""

import threading

from flask import current_app
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from opslab.config import Config
from opslab.directory import Directory

from .contract import Contract
from .directory import DirectoryAccess
from .heads import BranchHeads

_readers = threading.local()


def config() -> Config:
    """The opslab configuration the app was created with."""
    settings: Config = current_app.config["OPSLAB"]
    return settings


def directory() -> DirectoryAccess:
    """The API's access to the directory."""
    access: DirectoryAccess = current_app.extensions["opslab.directory"]
    return access


def reader() -> Directory:
    """This thread's kept directory connection for reads, with a fresh deadline.

    A new connection per request would cost more than the classification
    it serves; each request gets its own overall deadline.
    """
    settings = config()
    kept: Directory | None = getattr(_readers, "directory", None)
    if kept is None or kept.settings is not settings.ldap:
        kept = _readers.directory = Directory(settings.ldap)
    kept.begin_task()
    return kept


def contract() -> Contract:
    """The OpenAPI document and its validators."""
    document: Contract = current_app.extensions["opslab.contract"]
    return document


def engine() -> Engine:
    """The SQL store's engine (for the few statements that need no ORM session)."""
    store: Engine = current_app.extensions["opslab.engine"]
    return store


def session() -> Session:
    """A new ORM session on the SQL store; use it as a context manager."""
    new: Session = current_app.extensions["opslab.sessions"]()
    return new


def heads() -> BranchHeads:
    """The control repository's branch heads, as instances are told them."""
    known: BranchHeads = current_app.extensions["opslab.heads"]
    return known
