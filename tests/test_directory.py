"""Directory reads against the real slapd: base-scope reads, and a kept connection (as the
API keeps one per worker) across a slapd restart."""

import pytest

from opslab.config import LdapSettings
from opslab.directory import Directory, DirectoryError, DirectoryUnavailable, Search
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, HOSTS, PEOPLE


def test_a_kept_connection_survives_a_server_restart(private_slapd: ThrowawaySlapd) -> None:
    directory = Directory(LdapSettings(uri=private_slapd.ldapi_uri, base=BASE, timeout=2,
                                       deadline=10))
    search = [Search(BASE, "(associatedDomain=web1.web.example.org)")]
    assert [e.dn for e in directory.search(search)[0]] == [f"dc=web1.web.example.org,{HOSTS}"]

    private_slapd.stop()
    private_slapd.start()
    directory.begin_task()
    # The old connection is dead; the search reconnects once and answers.
    assert len(directory.search(search)[0]) == 1

    private_slapd.stop()
    directory.begin_task()
    with pytest.raises(DirectoryUnavailable):
        directory.search(search)
    directory.close()


def test_a_base_scope_search_reads_one_entry_at_its_dn(slapd: ThrowawaySlapd) -> None:
    directory = Directory(LdapSettings(uri=slapd.ldapi_uri, base=BASE, timeout=2, deadline=10))
    alice = f"uid=alice,{PEOPLE}"
    try:
        found, missing, unmatched, hosts = directory.search([
            Search(alice, "(objectClass=ldapPublicKey)", ["uid"], scope="base"),
            Search(f"uid=nobody-here,{PEOPLE}", "(objectClass=*)", scope="base"),
            Search(alice, "(objectClass=groupOfNames)", scope="base"),
            Search(HOSTS, "(associatedDomain=web1.web.example.org)", ["dc"]),
        ])
        assert [entry.dn for entry in found] == [alice]
        assert found[0].values("uid") == ["alice"]
        # Only the entry itself: nothing below the people base's entries, nothing beside.
        assert (missing, unmatched) == ([], [])
        assert [entry.dn for entry in hosts] == [f"dc=web1.web.example.org,{HOSTS}"]
        # A subtree search of a base that does not exist is still a misconfiguration.
        with pytest.raises(DirectoryError, match="does not exist"):
            directory.search([Search(f"ou=nowhere,{BASE}", "(objectClass=*)")])
    finally:
        directory.close()
