"""StartTLS to the directory, verified against the configured CA file; cleartext to
another host refused."""

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from opslab.slapd import ThrowawaySlapd
from tests.conftest import (
    BASE,
    PEOPLE,
    SCHEMAS,
    EncRunner,
    host_ldif,
    legacy_ldif,
    project_ldif,
    write_config,
)
from tests.debian_files import debian_root
from tests.http_stubs import Recorder

SSH_KEYS = Path(sys.executable).with_name("opslab-ssh-keys")
MEMBER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRscy1tZW1iZXIta2V5LW9ubHk= tls-member@example"
INSTANCE = "h1.tlsproj.example.org"  # no opslabProject: its name says tlsproj


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
        slapd.add_ldif("\n".join([
            f"dn: uid=tls-member,{PEOPLE}\nobjectClass: inetOrgPerson\n"
            f"objectClass: ldapPublicKey\nuid: tls-member\ncn: m\nsn: m\n"
            f"sshPublicKey: {MEMBER_KEY}\n",
            project_ldif("tlsproj", f"member: uid=tls-member,{PEOPLE}"),
            host_ldif(INSTANCE),
        ]))
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


@pytest.fixture
def ca_file(tls_slapd: tuple[ThrowawaySlapd, Path]) -> Iterator[Path]:
    """The server's certificate as a CA file everyone may read, as an instance keeps it."""
    directory = Path(tempfile.mkdtemp(prefix="opslab-ca-"))
    directory.chmod(0o755)
    path = directory / "ca.pem"
    shutil.copyfile(tls_slapd[1], path)
    path.chmod(0o644)
    yield path
    shutil.rmtree(directory)


def ssh_keys(config: Path, user: str) -> subprocess.CompletedProcess[str]:
    """The installed opslab-ssh-keys, with an environment as bare as sshd gives it."""
    return subprocess.run([str(SSH_KEYS), "--config", str(config), user], capture_output=True,
                          text=True, timeout=60, env={"PATH": os.defpath}, check=False)


def test_opslab_ssh_keys_over_starttls_as_bootstrap_configures_it(
    tmp_path: Path, tls_slapd: tuple[ThrowawaySlapd, Path], ca_file: Path
) -> None:
    slapd, _ = tls_slapd
    token = tmp_path / "token"
    token.write_text("host-token\n")
    root = debian_root(tmp_path / "root")
    bootstrap = subprocess.run(
        [sys.executable, "-m", "opslab.cli", "agent", "bootstrap",
         "--api-url", "https://api.example.org", "--ldap-uri", slapd.ldap_uri,
         "--ldap-starttls", "--ldap-ca-file", str(ca_file), "--ldap-base", BASE,
         "--remote", "https://git.example.org/puppet.git", "--certname", INSTANCE,
         "--token-file", str(token), "--root", str(root), "--no-start"],
        capture_output=True, text=True, timeout=120, check=False)
    assert bootstrap.returncode == 0, bootstrap.stderr
    config = root / "etc/opslab/opslab.yaml"
    # nslcd gets the same channel: StartTLS, and the CA that makes the server's name count.
    nslcd = (root / "etc/nslcd.conf").read_text().splitlines()
    assert {f"uri {slapd.ldap_uri}", "ssl start_tls", f"tls_cacertfile {ca_file}",
            "tls_reqcert demand"} <= set(nslcd)

    granted = ssh_keys(config, "tls-member")

    assert (granted.returncode, granted.stdout, granted.stderr) == (0, f"{MEMBER_KEY}\n", "")
    # Without the CA, the server's certificate is not trusted: no keys, whatever it says.
    settings = yaml.safe_load(config.read_text())
    del settings["ldap"]["ca_file"]
    config.write_text(yaml.safe_dump(settings))
    refused = ssh_keys(config, "tls-member")
    assert (refused.returncode, refused.stdout) == (3, "")


def test_cleartext_to_another_host_is_refused_before_any_connection(tmp_path: Path) -> None:
    """192.0.2.0/24 answers nobody: any attempt to connect would only time out."""
    config = tmp_path / "opslab.yaml"
    config.write_text(yaml.safe_dump({
        "ldap": {"uri": "ldap://192.0.2.1", "base": BASE},
        "apply": {"certname": INSTANCE, "state_dir": str(tmp_path / "state")},
    }))
    refused = ssh_keys(config, "tls-member")
    assert (refused.returncode, refused.stdout) == (3, "")
    assert "ldap.uri 'ldap://192.0.2.1' is cleartext to 192.0.2.1" in refused.stderr

    token = tmp_path / "token"
    token.write_text("host-token\n")
    config.write_text(yaml.safe_dump({
        "ldap": {"base": BASE},
        "enc": {"api_url": "http://192.0.2.1:8150", "api_token_file": str(token)},
        "apply": {"certname": INSTANCE, "state_dir": str(tmp_path / "state")},
    }))
    agent = subprocess.run([sys.executable, "-m", "opslab.cli", f"--config={config}", "agent",
                            "run", "--once"], capture_output=True, text=True, timeout=120,
                           check=False)
    assert agent.returncode == 2
    assert "enc.api_url 'http://192.0.2.1:8150' is cleartext to 192.0.2.1" in agent.stderr
    assert not (tmp_path / "state").exists()


CLASSIFICATION = "---\nclasses: {}\nenvironment: production\nparameters: {}\n"


def test_an_https_api_is_verified_with_its_host_name(
    tmp_path: Path, tls_slapd: tuple[ThrowawaySlapd, Path], run_enc: EncRunner
) -> None:
    """``opslab-enc`` (and the agent: one request function) against an https:// API: a
    certificate the trust store does not vouch for, or one for another name, is refused
    as an outage (no answer); the system's trust store (here $SSL_CERT_FILE) is used."""
    _, certificate = tls_slapd
    token = tmp_path / "host.token"
    token.write_text("a-token\n")

    def config(url: str, name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "enc": {"api_url": url, "api_token_file": str(token), "api_timeout": 5},
            "cache": {"dir": str(tmp_path / f"cache-{name}")}}))
        return path

    trusted = {"SSL_CERT_FILE": str(certificate)}
    with Recorder(body=CLASSIFICATION.encode(), tls=(certificate, certificate.with_name(
            "server.key"))) as api:
        port = api.url.rpartition(":")[2]
        untrusted = run_enc("--config", str(config(api.url, "untrusted")), "n1.example.org")
        verified = run_enc("--config", str(config(api.url, "verified")), "n1.example.org",
                           env=trusted)
        misnamed = run_enc("--config", str(config(f"https://localhost:{port}", "misnamed")),
                           "n1.example.org", env=trusted)
    assert (untrusted.returncode, untrusted.stdout) == (3, "")
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert (verified.returncode, verified.stdout) == (0, CLASSIFICATION), verified.stderr
    assert (misnamed.returncode, misnamed.stdout) == (3, "")
    assert "CERTIFICATE_VERIFY_FAILED" in misnamed.stderr
    assert [path for _, path, _ in api.requests] == ["/v1/nodes/n1.example.org"]
