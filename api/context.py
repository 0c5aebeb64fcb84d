"""What a request handler reaches through the current app, in one place."""

from flask import current_app
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from opslab.config import Config
from opslab.directory import Directory
from opslab.instances import provider_for
from opslab.instances.provider import Provider

from .contract import Contract
from .directory import DirectoryAccess
from .heads import BranchHeads


def config() -> Config:
    """The opslab configuration the app was created with."""
    settings: Config = current_app.config["OPSLAB"]
    return settings


def directory() -> DirectoryAccess:
    """The API's access to the directory."""
    access: DirectoryAccess = current_app.extensions["opslab.directory"]
    return access


def reader() -> Directory:
    """This thread's directory connection as the ENC reads (``ldap.*``), for this request."""
    return directory().reader()


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


def provider() -> Provider:
    """The instance provider, made on first use (openstacksdk is imported only then)."""
    extensions = current_app.extensions
    if "opslab.provider" not in extensions:
        extensions["opslab.provider"] = provider_for(config())
    made: Provider = extensions["opslab.provider"]
    return made
