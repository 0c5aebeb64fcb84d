"""Shared fixtures: one real slapd per test session, loaded with the example directory.

Tests add the entries they need under names of their own, so they can share
the one server; tests that stop or freeze a server start their own.
"""

import base64
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import ldap
import pytest
import yaml
from flask.testing import FlaskClient
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import text

from opslab.api.app import create_app
from opslab.api.store import engine_for, migrate
from opslab.config import Config, parse
from opslab.puppet import enc_command
from opslab.slapd import ThrowawaySlapd, free_port
from tests.browser import chromium
from tests.browser import log_in as browser_log_in
from tests.mariadb import ThrowawayMariaDB
from tests.postgres import ThrowawayPostgres
from tests.served_api import ServedApi

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = sorted((REPO / "schema").glob("*.ldif"))
EXAMPLE_DIRECTORY = REPO / "examples" / "directory.ldif"
CONTROL_REPO = REPO / "examples" / "control-repo"
BASE = "dc=example,dc=org"
HOSTS = f"ou=hosts,{BASE}"
PROJECTS = f"ou=projects,{BASE}"


@pytest.fixture(scope="session", autouse=True)
def _user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every opslab command the tests run keeps its cache (opslab.yamlcache) in the
    session's temporary directory, not in the home directory of whoever runs them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


def start_directory() -> ThrowawaySlapd:
    """A running slapd with the schemas, the base entries and the example data."""
    slapd = ThrowawaySlapd(BASE, SCHEMAS)
    slapd.start()
    try:
        slapd.create_base()
        slapd.add_ldif(EXAMPLE_DIRECTORY.read_text(encoding="utf-8"))
    except BaseException:
        slapd.destroy()
        raise
    return slapd


@pytest.fixture(scope="session")
def slapd() -> Iterator[ThrowawaySlapd]:
    """The session's shared directory server."""
    server = start_directory()
    yield server
    server.destroy()


@pytest.fixture
def private_slapd() -> Iterator[ThrowawaySlapd]:
    """A directory server of this test's own, free to be stopped or frozen."""
    server = start_directory()
    yield server
    server.destroy()


def write_config(path: Path, slapd: ThrowawaySlapd, **sections: dict[str, object]) -> Path:
    """An opslab.yaml for ``slapd``; ``sections`` add or override keys."""
    document: dict[str, dict[str, object]] = {
        "ldap": {"uri": slapd.ldapi_uri, "base": BASE, "timeout": 2, "deadline": 5},
        "cache": {"dir": str(path.parent / "cache")},
    }
    for name, values in sections.items():
        document.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path: Path, slapd: ThrowawaySlapd) -> Path:
    """A configuration file pointing at the shared slapd, with a private cache."""
    return write_config(tmp_path / "opslab.yaml", slapd)


EncRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_enc() -> EncRunner:
    """Run opslab-enc as a separate process, exactly as Puppet does."""

    def run(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*enc_command(None), *arguments],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **(env or {})},
            check=False,
        )

    return run


def host_ldif(fqdn: str, *lines: str, object_classes: tuple[str, ...] = ()) -> str:
    """LDIF for an opslab-style host entry with extra attribute lines."""
    classes = ("dNSDomain", "domainRelatedObject", "puppetClient", "opslabNode", *object_classes)
    body = "".join(f"objectClass: {name}\n" for name in classes)
    extra = "".join(f"{line}\n" for line in lines)
    return f"dn: dc={fqdn},{HOSTS}\n{body}dc: {fqdn}\nassociatedDomain: {fqdn}\n{extra}"


def legacy_ldif(cn: str, *lines: str) -> str:
    """LDIF for an entry written for Puppet's old LDAP terminus (cn=, device)."""
    extra = "".join(f"{line}\n" for line in lines)
    return (
        f"dn: cn={cn},{HOSTS}\nobjectClass: device\nobjectClass: puppetClient\ncn: {cn}\n{extra}"
    )


def project_ldif(name: str, *lines: str) -> str:
    """LDIF for a project entry (one member, so groupOfNames is satisfied)."""
    extra = "".join(f"{line}\n" for line in lines)
    return (
        f"dn: cn={name},{PROJECTS}\nobjectClass: groupOfNames\nobjectClass: puppetClient\n"
        f"objectClass: opslabNode\ncn: {name}\nmember: uid=alice,ou=people,{BASE}\n{extra}"
    )


# The coordination API: people with passwords, SQL databases, a test client.

PEOPLE = f"ou=people,{BASE}"
PASSWORDS = {"carol": "carol-secret", "dave": "dave-secret", "olga": "olga-secret"}


@pytest.fixture(scope="session")
def people(slapd: ThrowawaySlapd) -> None:
    """carol (member of web), dave (member of nothing), olga (operations)."""
    add_people(slapd)


def add_people(slapd: ThrowawaySlapd) -> None:
    """carol (member of web), dave (member of nothing), olga (operations), with passwords."""
    for uid, password in PASSWORDS.items():
        slapd.add_ldif(f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                       f"cn: {uid}\nsn: {uid}\nuserPassword: {password}\n")
    slapd.add_ldif(f"dn: cn=operations,{PROJECTS}\nobjectClass: groupOfNames\n"
                   f"cn: operations\nmember: uid=olga,{PEOPLE}\n")
    connection = slapd.connect()
    connection.modify_s(f"cn=web,{PROJECTS}", [(ldap.MOD_ADD, "member",
                                                [f"uid=carol,{PEOPLE}".encode()])])
    connection.unbind_s()


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb() -> Iterator[ThrowawayMariaDB]:
    server = ThrowawayMariaDB()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated database: SQLite, a real PostgreSQL and a real MariaDB."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'api.sqlite'}"
    else:
        url = request.getfixturevalue(request.param).url
    migrate(url)
    yield url
    if request.param == "postgres":
        engine = engine_for(url)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    elif request.param == "mariadb":
        request.getfixturevalue("mariadb").reset()


def api_config(tmp_path: Path, slapd: ThrowawaySlapd, database: str | None = None,
               **api: object) -> Config:
    """The API's configuration for ``slapd`` (as its writer) and ``database`` (None: a new,
    migrated SQLite database in ``tmp_path``); ``api`` adds or overrides ``api.*`` keys."""
    secret = tmp_path / "writer.secret"
    secret.write_text(slapd.root_password)
    session_secret = tmp_path / "session.secret"
    session_secret.write_text("pages-session-key-of-these-tests-0123456789")
    if database is None:
        database = f"sqlite:///{tmp_path / 'api.sqlite'}"
        migrate(database)
    return parse(yaml.safe_dump({
        "ldap": {"uri": slapd.ldapi_uri, "base": BASE},
        "api": {"database": database, "domain": "example.org", "writer_dn": slapd.root_dn,
                "writer_password_file": str(secret), "session_secret_file": str(session_secret),
                "public_url": "https://opslab.example.org", **api},
    }), "test")


def api_client(tmp_path: Path, slapd: ThrowawaySlapd, database: str) -> Iterator[FlaskClient]:
    """A test client of the API on ``database``, writing to ``slapd``."""
    app = create_app(api_config(tmp_path, slapd, database, max_body=20000))
    with app.test_client() as test_client:
        yield test_client
    app.extensions["opslab.engine"].dispose()


@pytest.fixture
def client(tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> Iterator[FlaskClient]:
    """The API on SQLite, its default store: for what does not depend on the database."""
    database = f"sqlite:///{tmp_path / 'api.sqlite'}"
    migrate(database)
    yield from api_client(tmp_path, slapd, database)


@pytest.fixture
def stored_client(tmp_path: Path, slapd: ThrowawaySlapd, people: None,
                  database: str) -> Iterator[FlaskClient]:
    """The API on each database (SQLite, PostgreSQL, MariaDB): for tests of what it stores."""
    yield from api_client(tmp_path, slapd, database)


def basic(uid: str) -> dict[str, str]:
    token = base64.b64encode(f"{uid}:{PASSWORDS[uid]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def hanging_server() -> Iterator[int]:
    """A TCP port on loopback that accepts connections and never answers; its port."""
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield port
    finally:
        stop.set()
        acceptor.join(timeout=5)
        for connection in accepted:
            connection.close()
        server.close()


# The pages' tests (tests/test_pages*.py): the API served for the module, a headless
# chromium for the module (tests/browser.py), and that browser logged in as carol.
@pytest.fixture(scope="module")
def pages_api(tmp_path_factory: pytest.TempPathFactory, slapd: ThrowawaySlapd,
              people: None) -> Iterator[ServedApi]:
    """The API and its pages under gunicorn, with a session secret."""
    served = ServedApi(tmp_path_factory.mktemp("pages-api"), slapd, BASE)
    served.start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


@pytest.fixture
def carol_browser(browser: WebDriver, pages_api: ServedApi) -> WebDriver:
    """The browser, logged in as carol (a member of web)."""
    browser.delete_all_cookies()
    browser_log_in(browser, pages_api.url, "carol", PASSWORDS["carol"])
    return browser
