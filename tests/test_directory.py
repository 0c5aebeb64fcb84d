"""The directory layer against the real slapd: base-scope reads, writes and password checks,
and a kept connection (as the API keeps them per worker thread) across a slapd restart."""

from pathlib import Path

import ldap
import pytest

from opslab.config import LdapSettings
from opslab.directory import (
    Directory,
    DirectoryConflict,
    DirectoryError,
    DirectoryUnavailable,
    Search,
)
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


def test_writes_through_a_kept_connection_across_a_restart(
    private_slapd: ThrowawaySlapd, tmp_path: Path
) -> None:
    secret = tmp_path / "root.secret"
    secret.write_text(private_slapd.root_password + "\n")
    writer = Directory(LdapSettings(uri=private_slapd.ldapi_uri, base=BASE, timeout=2,
                                    deadline=10, bind_dn=private_slapd.root_dn,
                                    bind_password_file=str(secret)))
    dn = f"dc=written.example.org,{HOSTS}"
    host = {"objectClass": ["dNSDomain", "domainRelatedObject", "puppetClient"],
            "dc": ["written.example.org"], "associatedDomain": ["written.example.org"]}
    writer.add(dn, host)
    with pytest.raises(DirectoryConflict):
        writer.add(dn, host)

    private_slapd.stop()
    private_slapd.start()
    writer.begin_task()
    # The kept connection died with the server: the write reconnects first, once.
    writer.modify(dn, [(ldap.MOD_ADD, "puppetClass", ["base"])])
    entry = writer.read(dn, ["puppetClass"])
    assert entry is not None
    assert entry.values("puppetClass") == ["base"]
    with pytest.raises(DirectoryConflict):
        writer.modify(dn, [(ldap.MOD_DELETE, "puppetClass", ["absent"])])
    writer.delete(dn)
    assert writer.read(dn) is None
    with pytest.raises(DirectoryConflict):
        writer.delete(dn)

    # A person's password, on a connection of its own; an empty one never binds.
    checker = Directory(LdapSettings(uri=private_slapd.ldapi_uri, base=BASE, timeout=2,
                                     deadline=10))
    assert checker.check_password(private_slapd.root_dn, private_slapd.root_password)
    assert not checker.check_password(private_slapd.root_dn, "wrong")
    assert not checker.check_password(private_slapd.root_dn, "")
    private_slapd.stop()
    writer.begin_task()
    with pytest.raises(DirectoryUnavailable):
        writer.delete(dn)
