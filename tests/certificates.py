"""A throwaway CA and a server certificate for one IP address, for the tests' TLS servers
(the site's nginx and slapd, the IRC servers): an IP subject alternative name, which
libldap, curl, git, pip and Python's ssl all check."""

import subprocess
from pathlib import Path

OPENSSL_TIMEOUT = 60.0  # seconds for one openssl command


def _openssl(*arguments: str | Path) -> None:
    subprocess.run(["openssl", *(str(argument) for argument in arguments)], check=True,
                   capture_output=True, timeout=OPENSSL_TIMEOUT)


class ThrowawayCa:
    """``ca`` (the CA's certificate), and ``certificate`` and ``key`` (mode 0600) of a
    server at ``address``, made in ``directory``; valid two days."""

    def __init__(self, directory: Path, address: str, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = directory / "ca.pem"
        self.certificate = directory / "server.pem"
        self.key = directory / "server.key"
        ca_key, request, extensions = (directory / "ca.key", directory / "server.csr",
                                       directory / "server.ext")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", ca_key, "-out", self.ca, "-days", "2",
                 "-subj", f"/CN={name} CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", self.key, "-out", request, "-subj", f"/CN={address}")
        extensions.write_text(f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth\n"
                              "basicConstraints=CA:FALSE\n")
        _openssl("x509", "-req", "-in", request, "-CA", self.ca, "-CAkey", ca_key,
                 "-CAcreateserial", "-out", self.certificate, "-days", "2",
                 "-extfile", extensions)
        self.key.chmod(0o600)
