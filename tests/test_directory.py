"""A kept Directory connection (as the API keeps one per worker) across a slapd restart."""

import pytest

from opslab.config import LdapSettings
from opslab.directory import Directory, DirectoryUnavailable, Search
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, HOSTS


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
