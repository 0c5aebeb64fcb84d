"""The base image of local instances: Debian 12, built with debootstrap.

One directory tree, shared read-only by every local instance (each boots it
under an overlay of its own, see :mod:`opslab.instances.local`). It is built
aside (``PATH.building-HEX``), completed with apt inside the tree run by
systemd-nspawn (not chroot: the packages' maintainer scripts then see a
proper /proc, /sys and /dev), marked complete, and renamed into place, so a
build that was interrupted is never taken for an image. An image complete
with the packages asked for is never built again; one with other packages (an
older opslab's list) is built anew and swapped in, so delete the instances
running on it first.

debootstrap installs only a minimal base with systemd, because its
``--include`` does not resolve virtual packages (cloud-init's dependencies
would be left unconfigured, and debootstrap then leaves its
``policy-rc.d`` behind, so no service would ever start in an instance).
The packages come from the Debian mirror that this machine's apt sources
name.

Run it as ``python -m opslab.instances.image DIRECTORY``.
"""

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from opslab.lock import FileLock
from opslab.process import TimedOut, run

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The file that marks a complete image, with what is in it.
MARKER = ".opslab-image"
# What every local instance needs: systemd as its init (debootstrap), cloud-init
# with the NoCloud seed, sshd and sudo for members, puppet and python for the
# agent, curl for bootstrap.sh; iproute2 and procps to look inside; and the rest
# of what bootstrap.sh installs (git, nslcd and its NSS and PAM modules, what
# builds python-ldap), so that its apt-get install finds everything in place.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus")
PACKAGES = ("cloud-init", "openssh-server", "sudo", "puppet", "python3", "python3-venv",
            "python3-pip", "curl", "ca-certificates", "iproute2", "procps",
            "git", "python3-dev", "libldap2-dev", "libsasl2-dev", "gcc",
            "nslcd", "libnss-ldapd", "libpam-ldapd")
DEBOOTSTRAP_TIMEOUT = 900.0
APT_TIMEOUT = 900.0


class ImageError(Exception):
    """The image could not be built; the message says which step failed and its output."""


def is_complete(path: str | os.PathLike[str], packages: tuple[str, ...] = PACKAGES) -> bool:
    """Whether ``path`` is an image this module built to its end, with ``packages``."""
    try:
        marker = (Path(path) / MARKER).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return f"packages: {' '.join(packages)}" in marker.splitlines()


def mirror_from_apt(sources: str = "/etc/apt") -> str:
    """The Debian mirror this machine's apt sources name for ``SUITE`` (its main archive, not
    security or updates); Debian's default mirror when they name none."""
    root = Path(sources)
    texts = []
    for path in [root / "sources.list", *sorted((root / "sources.list.d").glob("*"))]:
        if path.suffix in (".list", ".sources") and path.is_file():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                texts.append((path.suffix, path.read_text(encoding="utf-8")))
    for suffix, text in texts:
        if suffix == ".list":
            for line in text.splitlines():
                match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if match and match[2] == SUITE:
                    return match[1].rstrip("/")
        else:
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
                if ("deb" in fields.get("Types", "").split()
                        and SUITE in fields.get("Suites", "").split()
                        and fields.get("Enabled", "yes").lower() != "no"
                        and fields.get("URIs")):
                    return str(fields["URIs"]).split()[0].rstrip("/")
    return DEFAULT_MIRROR


def nspawn_command(image: str) -> list[str]:
    """systemd-nspawn running a command in ``image`` (this machine's network; no host systemd
    needed, so no registration with machined and no scope unit of its own)."""
    return ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
            f"--directory={image}", "--pipe"]


def build(path: str | os.PathLike[str], *, mirror: str | None = None,
          packages: tuple[str, ...] = PACKAGES, lock_timeout: float = 1800.0) -> float:
    """Build the image at ``path`` unless a complete one is there; the seconds the build took
    (0 if there was nothing to do). Two builders of the same path take turns: the second
    finds the first's image complete. Raises ImageError."""
    target = Path(path)
    if is_complete(target, packages):
        return 0.0
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock", f"building the image {target}", timeout=lock_timeout):
        if is_complete(target, packages):
            return 0.0
        started = time.monotonic()
        mirror = mirror or mirror_from_apt()
        aside = Path(f"{target}.building-{os.urandom(4).hex()}")
        try:
            _debootstrap(aside, mirror)
            _install(aside, mirror, packages)
            seconds = time.monotonic() - started
            (aside / MARKER).write_text(
                f"suite: {SUITE}\nmirror: {mirror}\npackages: {' '.join(packages)}\n"
                f"built: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
                f"seconds: {seconds:.0f}\n", encoding="utf-8")
            if target.exists() or target.is_symlink():  # incomplete, or other packages
                _remove_tree(target)
            aside.rename(target)
        except BaseException:
            _remove_tree(aside)
            raise
        return seconds


def _debootstrap(aside: Path, mirror: str) -> None:
    _step(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
           SUITE, str(aside), mirror], DEBOOTSTRAP_TIMEOUT, "debootstrap")


def _install(aside: Path, mirror: str, packages: tuple[str, ...]) -> None:
    # The suite and its updates and security archives, as a Debian 12 install has them.
    security = re.sub(r"/debian$", "/debian-security", mirror)
    sources = (f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
               + (f"deb {security} {SUITE}-security main\n" if security != mirror else ""))
    (aside / "etc/apt/sources.list").write_text(sources, encoding="utf-8")
    # libnss-ldapd leaves nsswitch.conf alone: bootstrap adds ldap to it with nslcd's
    # configuration, as on any Debian instance.
    script = ("set -e; export DEBIAN_FRONTEND=noninteractive; "
              "printf '%s\\n' 'libnss-ldapd libnss-ldapd/nsswitch multiselect' "
              "'libnss-ldapd libnss-ldapd/clean_nsswitch boolean false' "
              "| debconf-set-selections; "
              "apt-get update -q; "
              "apt-get install -y -q --no-install-recommends \"$@\"; "
              "apt-get clean; rm -rf /var/lib/apt/lists/*")
    _step([*nspawn_command(str(aside)), "sh", "-c", script, "install", *packages],
          APT_TIMEOUT, "apt-get install in the image")
    # A debootstrap that stopped half-way leaves policy-rc.d (exit 101): no service would
    # start on an apt install in an instance. Each instance gets its own machine-id.
    (aside / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    (aside / "etc/machine-id").write_text("", encoding="utf-8")
    shutil.rmtree(aside / "var/lib/dbus/machine-id", ignore_errors=True)
    (aside / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    shutil.rmtree(aside / "run/systemd/nspawn", ignore_errors=True)


def _step(command: list[str], timeout: float, what: str) -> None:
    try:
        result = run(command, timeout, stderr=subprocess.STDOUT, text=True, grace=10.0)
    except TimedOut as error:
        raise ImageError(f"{what} ran past {timeout:g} s: {_tail(error.output)}") from None
    except OSError as error:
        raise ImageError(f"{what} could not start: {error}") from None
    if result.returncode != 0:
        raise ImageError(f"{what} failed (status {result.returncode}): {_tail(result.stdout)}")


def _tail(output: object, lines: int = 30) -> str:
    return "\n".join(str(output or "").splitlines()[-lines:])


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m opslab.instances.image",
                                     description="Build the base image of local instances "
                                                 "(Debian 12) unless it is there, complete.")
    parser.add_argument("directory", help="where the image goes (e.g. "
                                          "/var/lib/opslab/instances/image)")
    parser.add_argument("--mirror", help="the Debian mirror (default: the one apt's sources "
                                         "name)")
    options = parser.parse_args(argv)
    try:
        seconds = build(options.directory, mirror=options.mirror)
    except ImageError as error:
        print(f"image: error: {error}", file=sys.stderr)
        return 1
    if seconds:
        print(f"built {options.directory} in {seconds:.0f} s")
    else:
        print(f"{options.directory} is complete already")
    return 0


if __name__ == "__main__":
    sys.exit(main())
