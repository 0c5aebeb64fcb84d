"""StartTLS to the directory, verified against the configured CA file."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, SCHEMAS, EncRunner, legacy_ldif, write_config


@pytest.fixture(scope="module")
def tls_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThrowawaySlapd, Path]]:
    """A slapd with a self-signed certificate for 127.0.0.1; yields it and the certificate."""
    keys = tmp_path_factory.mktemp("tls")
    certificate, key = keys / "server.pem", keys / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True, timeout=60,
    )
    with ThrowawaySlapd(BASE, SCHEMAS, tls=(certificate, key)) as slapd:
        slapd.create_base()
        slapd.add_ldif(legacy_ldif("secure", "puppetClass: tls_only"))
        yield slapd, certificate


def test_starttls_with_the_right_ca(
    tmp_path: Path, tls_slapd: tuple[ThrowawaySlapd, Path], run_enc: EncRunner
) -> None:
    slapd, certificate = tls_slapd
    config = write_config(tmp_path / "opslab.yaml", slapd, ldap={
        "uri": slapd.ldap_uri, "starttls": True, "ca_file": str(certificate)})
    result = run_enc("--config", str(config), "secure.example.org")
    assert result.returncode == 0, result.stderr
    assert '"tls_only"' in result.stdout


def test_starttls_refuses_an_unknown_certificate(
    tmp_path: Path, tls_slapd: tuple[ThrowawaySlapd, Path], run_enc: EncRunner
) -> None:
    slapd, _ = tls_slapd
    config = write_config(tmp_path / "opslab.yaml", slapd, ldap={
        "uri": slapd.ldap_uri, "starttls": True})  # system CAs do not know it
    result = run_enc("--config", str(config), "secure.example.org")
    assert (result.returncode, result.stdout) == (3, "")
    assert "directory unavailable" in result.stderr
