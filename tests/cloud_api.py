"""The API on an OpenStack stand-in, as tests of instances use it: a test client whose
provider is openstacksdk talking to :mod:`tests.openstack_standin`."""

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap
import pytest
from flask.testing import FlaskClient

from opslab.api.app import create_app
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, api_config, basic
from tests.openstack_standin import Created, Fate, StandIn

HOSTS = f"ou=hosts,{BASE}"
DNS = f"ou=dns,{BASE}"


class Cloud:
    """The API (a test client) on an OpenStack stand-in."""

    def __init__(self, client: FlaskClient, standin: StandIn) -> None:
        self.client = client
        self.standin = standin
        self.created: list[Created] = []

    def create(self, label: str, **instance: Any) -> Any:
        return self.client.post("/v1/projects/web/hosts",
                                json={"name": label, "classes": ["motd"],
                                      "instance": instance}, headers=basic("carol"))


@pytest.fixture
def cloud(tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> Iterator[Cloud]:
    before = entries_below(slapd)
    with StandIn() as standin:
        clouds = standin.clouds_yaml(tmp_path / "clouds.yaml")
        config = api_config(tmp_path, slapd)
        instances = config.instances._replace(
            provider="openstack", cloud="standin", clouds_file=str(clouds),
            image="debian-12", flavor="m1.small", network="private",
            bootstrap_url="https://opslab.example.org/bootstrap.sh", package="opslab==0.1",
            ldap_uri="ldaps://ldap.example.org", remote="https://git.example.org/puppet.git",
            launch_timeout=4.0, delete_timeout=3.0, request_timeout=2.0)
        # A directory deadline shorter than a launch: the launch must not spend it.
        ldap_settings = config.ldap._replace(deadline=2.0)
        app = create_app(config._replace(instances=instances, ldap=ldap_settings))
        with app.test_client() as client:
            made = Cloud(client, standin)
            standin_hook = standin.on_create

            def record(created: Created) -> Fate:
                made.created.append(created)
                return standin_hook(created)

            standin.on_create = record
            yield made
        app.extensions["opslab.engine"].dispose()
    # What a test left (a failed assertion) goes, so the next starts clean; what was
    # there before it (the example directory) stays.
    connection = slapd.connect()
    for dn in entries_below(slapd) - before:
        with contextlib.suppress(ldap.NO_SUCH_OBJECT):
            connection.delete_s(dn)
    connection.unbind_s()


def entries_below(slapd: ThrowawaySlapd) -> set[str]:
    """The DNs of the host and alias entries."""
    connection = slapd.connect()
    try:
        return {dn for base in (HOSTS, DNS)
                for dn, _ in connection.search_s(base, ldap.SCOPE_ONELEVEL, "(objectClass=*)",
                                                 ["1.1"])}
    finally:
        connection.unbind_s()


def entry(slapd: ThrowawaySlapd, dn: str) -> dict[str, list[bytes]] | None:
    connection = slapd.connect()
    try:
        found = connection.search_s(dn, ldap.SCOPE_BASE)
    except ldap.NO_SUCH_OBJECT:
        return None
    finally:
        connection.unbind_s()
    return dict(found[0][1])
