# The two set-up commands for a fresh Debian machine (see README.md):
#   make demo   throwaway directory and example data, classify a node, deploy the
#               example branches, real puppet apply; then (as root) a member's
#               instance as a local container: launched, configured, logged in to;
#               then the review loop: a change, a comment, a clone, the vote
#   make test   the whole test suite, lint and type checks
# Each installs what it needs itself, system packages included.

PYTHON ?= python3
VENV := .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
# slapd and ldap-utils: the real directory server the tests and demo run;
# puppet: real puppet apply; postgresql, mariadb-server: the API's tests run on
# them as well as SQLite; git: the branch runner and its tests; openssl: the TLS
# test's certificate; sudo: visudo checks the agent's sudoers drop-in;
# openssh-server, openssh-client: a real sshd asks opslab-ssh-keys, a real ssh
# logs in; libldap2-dev, libsasl2-dev, gcc: to build python-ldap; systemd-container,
# debootstrap, iproute2: local instances (systemd-nspawn, their image, netns and veth);
# pdns-server, pdns-backend-ldap, dnsutils: a real PowerDNS serves the instances' names
# from the directory, and dig asks it; nginx-light, apt-cacher-ng: the site local
# instances reach (TLS in front of the API, bootstrap.sh, wheels and the Puppet
# repository; their apt proxy); cloud-init: its schema check of the user-data;
# python3-pip, python3-venv: Debian's python3 builds the instances' wheels;
# chromium, chromium-driver, fonts-dejavu-core: the pages' browser tests (Selenium);
# ngircd: the IRC server the log bot's tests connect to;
# inspircd, atheme-services: an IRC network with services accounts, for the bot's SASL
# and account-tag tests.
SYSTEM_PACKAGES := slapd ldap-utils puppet postgresql mariadb-server git openssl sudo \
	openssh-server openssh-client libldap2-dev libsasl2-dev gcc make \
	systemd-container debootstrap iproute2 pdns-server pdns-backend-ldap dnsutils \
	nginx-light apt-cacher-ng cloud-init python3-pip python3-venv \
	chromium chromium-driver fonts-dejavu-core ngircd inspircd atheme-services

.PHONY: demo test bench lint system-packages

system-packages:
	@echo "==> checking system packages: $(SYSTEM_PACKAGES)"
	@missing="$$(for package in $(SYSTEM_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q 'ok installed' \
	    || echo $$package; done)"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	$(PYTHON) -c 'import os, sys, sysconfig; \
	    sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
	    || missing="$$missing python3-dev"; \
	if [ -n "$$(echo $$missing)" ]; then \
	    echo "==> installing with apt-get:$$missing"; \
	    $(APT) update -q && $(APT) install -y -q --no-install-recommends $$missing; \
	else echo "    all present"; fi

$(VENV)/.installed: pyproject.toml
	@echo "==> creating $(VENV) and installing opslab with the API and its test and lint tools"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[api,test,lint]' tox
	touch $@

demo: system-packages $(VENV)/.installed
	@echo "==> running the demo"
	$(VENV)/bin/python examples/demo.py
	$(VENV)/bin/python examples/instance_demo.py
	$(VENV)/bin/python examples/review_demo.py $(if $(KEEP),--keep)

test: system-packages $(VENV)/.installed
	@echo "==> lint, type checks and the test suite (tox -e lint,py)"
	$(VENV)/bin/tox -e lint,py

bench: system-packages $(VENV)/.installed
	@echo "==> benchmarks (tox -e bench)"
	$(VENV)/bin/tox -e bench
