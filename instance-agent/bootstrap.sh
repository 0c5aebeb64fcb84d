#!/bin/sh
# Turn a fresh Debian instance into one the opslab agent manages. Run as root:
#
#   curl -fsSL https://opslab.example.org/bootstrap.sh | sh -s -- \
#       --package https://opslab.example.org/opslab-0.1.0-py3-none-any.whl \
#       --api-url https://api.example.org --ldap-uri ldaps://ldap.example.org \
#       --ldap-base dc=example,dc=org --remote https://git.example.org/puppet.git \
#       --token-file /etc/opslab/host-token
#
# It installs the Debian packages opslab needs, creates the virtualenv
# /opt/opslab ($OPSLAB_PREFIX if set), installs the opslab package given by --package SPEC into it
# (anything pip installs: a wheel URL, a path, or git+https://...; name no
# extras: the base install is what an instance needs, the ENC, the branch
# runner, the agent and opslab-ssh-keys with python-ldap and PyYAML, and the
# API's libraries are the extra opslab[api]), then hands
# every other argument to `opslab agent bootstrap` (see its --help). The host
# token comes from --token-file FILE or from standard input (--token-stdin),
# never from the command line; piped into sh, standard input is this script,
# so use --token-file there. Running it again upgrades opslab and re-bootstraps.
#
# Exit status: 2 bad usage (no --package), 1 not root or a step failed, else
# that of `opslab agent bootstrap`.
set -eu

# The installed units and the sshd drop-in name the commands of whichever
# virtualenv runs the bootstrap, so another prefix works too.
PREFIX=${OPSLAB_PREFIX:-/opt/opslab}
# puppet and git: the agent's puppet apply and branch sync; sudo: project
# members' sudo rights; python3-venv, python3-dev, libldap2-dev,
# libsasl2-dev and gcc: to build python-ldap in the virtualenv.
# nslcd, libnss-ldapd, libpam-ldapd: people as accounts from the directory; installed
# without recommends, so no nscd caches a removed member.
PACKAGES="puppet git sudo python3-venv python3-dev libldap2-dev libsasl2-dev gcc ca-certificates \
openssh-server nslcd libnss-ldapd libpam-ldapd"

say() {
    printf '==> %s\n' "$*"
}

fail() {
    status=$1
    shift
    printf 'opslab bootstrap.sh: error: %s\n' "$*" >&2
    exit "$status"
}

# Take --package SPEC out of the arguments; the rest go to opslab agent bootstrap.
# Each argument is shifted off the front and, unless it is --package or its
# value, put back at the end, so after one pass "$@" holds the rest in order.
package=
remaining=$#
while [ "$remaining" -gt 0 ]; do
    argument=$1
    shift
    remaining=$((remaining - 1))
    case $argument in
        --package)
            [ "$remaining" -gt 0 ] || fail 2 "--package needs a value"
            package=$1
            shift
            remaining=$((remaining - 1))
            ;;
        --package=*)
            package=${argument#--package=}
            ;;
        *)
            set -- "$@" "$argument"
            ;;
    esac
done

[ -n "$package" ] || fail 2 "--package SPEC is required: the opslab package for pip to \
install (a wheel URL, a path or git+https://...); the other arguments are those of \
'opslab agent bootstrap'"
[ "$(id -u)" -eq 0 ] || fail 1 "run this as root: it installs packages, writes /etc and \
starts services"
command -v apt-get >/dev/null 2>&1 || fail 1 "apt-get not found: this script is for Debian"

# The virtualenv must be readable by everyone: sshd runs opslab-ssh-keys as nobody.
umask 022

say "installing Debian packages: $PACKAGES"
export DEBIAN_FRONTEND=noninteractive
# libnss-ldapd must leave nsswitch.conf alone: opslab agent bootstrap edits it,
# together with nslcd's configuration, which it writes whole.
if command -v debconf-set-selections >/dev/null 2>&1; then
    printf '%s\n' 'libnss-ldapd libnss-ldapd/nsswitch multiselect' \
        'libnss-ldapd libnss-ldapd/clean_nsswitch boolean false' | debconf-set-selections
fi
# Only when something is missing: an image that has them all (as local instances'
# has) needs no fresh package lists, which cost seconds of every first boot.
missing=
for name in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q 'ok installed' \
        || missing="$missing $name"
done
if [ -n "$missing" ]; then
    apt-get update -q
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y -q --no-install-recommends $missing
else
    say "all of them are installed already"
fi

say "creating the virtualenv $PREFIX"
python3 -m venv "$PREFIX"

say "installing opslab (the base install) into $PREFIX: $package"
"$PREFIX/bin/pip" install -q --upgrade "$package"

say "running opslab agent bootstrap"
exec "$PREFIX/bin/opslab" agent bootstrap "$@"
