"""An instance's names, as a real PowerDNS serves them from the directory the API writes:
the host's A record, its PTR (strict mode), and the CNAME of its id; gone with the host."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import ldap
import pytest

from opslab.slapd import ThrowawaySlapd
from tests.cloud_api import Cloud, cloud
from tests.conftest import BASE, basic
from tests.powerdns import ThrowawayPowerDNS, zone_ldif

__all__ = ["cloud"]  # the fixture, imported for pytest


@pytest.fixture
def powerdns(tmp_path: Path, slapd: ThrowawaySlapd) -> Iterator[ThrowawayPowerDNS]:
    zones = ["example.org", "0.0.10.in-addr.arpa"]
    for zone in zones:
        slapd.add_ldif(zone_ldif(BASE, zone))
    server = ThrowawayPowerDNS(tmp_path / "pdns", slapd, BASE)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        connection = slapd.connect()
        for zone in zones:
            with contextlib.suppress(ldap.NO_SUCH_OBJECT):
                connection.delete_s(f"dc={zone},ou=dns,{BASE}")
        connection.unbind_s()


def test_an_instance_is_in_dns_by_its_name_its_address_and_its_id(
    cloud: Cloud, powerdns: ThrowawayPowerDNS
) -> None:
    answer = cloud.create("named")
    assert answer.status_code == 201, answer.json
    [address] = answer.json["host"]["instance"]["addresses"]
    [created] = cloud.created
    alias = f"i-{created.id.replace('-', '')[:8]}.web.example.org"
    reverse = ".".join(reversed(address.split("."))) + ".in-addr.arpa"

    assert powerdns.dig("named.web.example.org") == [address]
    assert powerdns.dig(reverse, "PTR") == ["named.web.example.org."]
    assert powerdns.dig(alias, "CNAME") == ["named.web.example.org."]
    assert powerdns.dig(alias) == ["named.web.example.org.", address]

    assert cloud.client.delete("/v1/hosts/named.web.example.org",
                               headers=basic("carol")).status_code == 204
    assert powerdns.dig("named.web.example.org") == []
    assert powerdns.dig(reverse, "PTR") == []
    assert powerdns.dig(alias, "CNAME") == []
