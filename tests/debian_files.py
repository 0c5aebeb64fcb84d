"""The files of a Debian 12 system that ``opslab agent bootstrap`` edits, for tests that
bootstrap into a directory (``--root``)."""

from pathlib import Path

# Debian 12's /etc/nsswitch.conf and /etc/pam.d/sshd (comments left out).
DEBIAN_NSSWITCH = """passwd:         files systemd
group:          files systemd
shadow:         files
gshadow:        files

hosts:          files dns
networks:       files

protocols:      db files
services:       db files
ethers:         db files
rpc:            db files

netgroup:       nis
"""
DEBIAN_PAM_SSHD = """@include common-auth
account    required     pam_nologin.so
@include common-account
session [success=ok ignore=ignore module_unknown=ignore default=bad]        pam_selinux.so close
session    required     pam_loginuid.so
session    optional     pam_keyinit.so force revoke
@include common-session
session    optional     pam_motd.so  motd=/run/motd.dynamic
session    required     pam_limits.so
session [success=ok ignore=ignore module_unknown=ignore default=bad]        pam_selinux.so open
@include common-password
"""


def debian_root(directory: Path) -> Path:
    """``directory``, made, holding Debian's nsswitch.conf and sshd PAM stack."""
    (directory / "etc/pam.d").mkdir(parents=True)
    (directory / "etc/nsswitch.conf").write_text(DEBIAN_NSSWITCH)
    (directory / "etc/pam.d/sshd").write_text(DEBIAN_PAM_SSHD)
    return directory
