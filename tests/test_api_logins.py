"""Wrong passwords counted per account and address (api/logins.py), for HTTP Basic and the
pages' login form alike, in the store every worker shares."""

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from flask.testing import FlaskClient
from sqlalchemy import inspect, select, update

from opslab.api.app import create_app
from opslab.api.store import LoginFailure, engine_for, now
from opslab.slapd import ThrowawaySlapd
from tests.conftest import PASSWORDS, api_config, basic
from tests.test_api_ci import alembic_config

LIMIT = 3
WINDOW = 600.0


@pytest.fixture
def api(tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> Iterator[FlaskClient]:
    app = create_app(api_config(tmp_path, slapd, login_failure_limit=LIMIT,
                                login_failure_window=WINDOW))
    with app.test_client() as test_client:
        yield test_client
    app.extensions["opslab.engine"].dispose()


def wrong(uid: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{uid}:not-it".encode()).decode()}


def projects(api: FlaskClient, headers: dict[str, str], address: str = "192.0.2.1") -> int:
    return api.get("/v1/projects", headers=headers,
                   environ_base={"REMOTE_ADDR": address}).status_code


def test_past_the_limit_an_address_may_not_try_that_account(api: FlaskClient) -> None:
    assert [projects(api, wrong("carol")) for _ in range(LIMIT)] == [401] * LIMIT
    answer = api.get("/v1/projects", headers=basic("carol"),
                     environ_base={"REMOTE_ADDR": "192.0.2.1"})
    assert answer.status_code == 429
    assert "too many wrong passwords for carol from this address: try again in" in \
        answer.json["error"]
    # Not a lock-out of carol: another address, and another account, still go in.
    assert projects(api, basic("carol"), "192.0.2.2") == 200
    assert projects(api, basic("olga")) == 200


def test_a_right_password_clears_the_count(api: FlaskClient) -> None:
    for _ in range(LIMIT - 1):
        assert projects(api, wrong("carol")) == 401
    assert projects(api, basic("carol")) == 200
    assert [projects(api, wrong("carol")) for _ in range(LIMIT)] == [401] * LIMIT
    assert projects(api, basic("carol")) == 429


def test_the_count_forgets_failures_past_the_window(api: FlaskClient) -> None:
    for _ in range(LIMIT):
        assert projects(api, wrong("dave")) == 401
    assert projects(api, basic("dave")) == 429
    app = api.application
    with app.extensions["opslab.sessions"]() as session:
        session.execute(update(LoginFailure).values(at=now() - timedelta(seconds=WINDOW + 1)))
        session.commit()
    assert projects(api, basic("dave")) == 200


def test_the_login_form_counts_with_basic(api: FlaskClient) -> None:
    """One count for both doors: wrong passwords over Basic close the form too."""
    for _ in range(LIMIT):
        assert projects(api, wrong("carol")) == 401
    form = api.get("/login", base_url="https://opslab.example.org",
                   environ_base={"REMOTE_ADDR": "192.0.2.1"})
    token = form.data.split(b'name="csrf_token" value="')[1].split(b'"')[0].decode()
    answer = api.post("/login", base_url="https://opslab.example.org",
                      environ_base={"REMOTE_ADDR": "192.0.2.1"},
                      headers={"Referer": "https://opslab.example.org/login"},
                      data={"csrf_token": token, "uid": "carol", "password": PASSWORDS["carol"]})
    assert answer.status_code == 429
    assert b"too many wrong passwords" in answer.data


def test_migration_0011_upgrades_and_downgrades(database: str) -> None:
    """0011 adds login_failures and takes it away again, on every database (test_api.py
    checks the schema at head)."""
    engine = engine_for(database)
    try:
        def has_table() -> bool:
            with engine.connect() as connection:
                return inspect(connection).has_table("login_failures")

        command.downgrade(alembic_config(database), "0010")
        assert not has_table()
        command.upgrade(alembic_config(database), "0011")
        assert has_table()
    finally:
        engine.dispose()


def test_failures_of_names_never_tried_again_are_forgotten(api: FlaskClient) -> None:
    """A spray of made-up names leaves no rows behind once the window has passed."""
    for number in range(5):
        assert projects(api, wrong(f"made{number}")) == 401
    app = api.application
    with app.extensions["opslab.sessions"]() as session:
        session.execute(update(LoginFailure).values(at=now() - timedelta(seconds=WINDOW + 1)))
        session.commit()
    assert projects(api, wrong("carol")) == 401
    with app.extensions["opslab.sessions"]() as session:
        left = session.scalars(select(LoginFailure.uid)).all()
    assert left == ["carol"]
