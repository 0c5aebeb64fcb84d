"""The one opslab configuration file, shared by every component.

Where it comes from: ``--config FILE``, else ``$OPSLAB_CONFIG``, else
``/etc/opslab/opslab.yaml`` if it exists, else the embedded defaults. A file
named explicitly must exist. Every key is declared below with its type and
default; an unknown key or a value of the wrong type is an error that names
the key, because a misspelt timeout silently falling back to its default is
the kind of mistake that only shows during an outage.
"""

import os
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Union, get_args, get_origin

from opslab import yamlcache
from opslab.names import InvalidName, has_control_characters, validate_project_name

if TYPE_CHECKING:
    import argparse

# Sections are NamedTuples rather than dataclasses, and a file's YAML is read
# through yamlcache (PyYAML imported only when the file changed): short-lived
# commands (opslab-enc, opslab branch sync) pay for every import on every run.

DEFAULT_PATH = "/etc/opslab/opslab.yaml"
ENVIRONMENT_VARIABLE = "OPSLAB_CONFIG"


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


class LdapSettings(NamedTuple):
    """How to reach the directory."""

    uri: str = "ldapi:///"
    base: str = ""
    bind_dn: str | None = None
    bind_password_file: str | None = None
    starttls: bool = False
    ca_file: str | None = None
    # Cleartext ldap:// to another host (see check_ldap_uri) only if said so.
    insecure: bool = False
    connect_timeout: float = 2.0
    timeout: float = 5.0
    deadline: float = 10.0


class EncSettings(NamedTuple):
    """How the node classifier reads the directory (see docs/enc.md)."""

    mode: str = "opslab"
    node_filter: str = "(&(objectClass=puppetClient)(|(cn=%s)(associatedDomain=%s)))"
    project_filter: str = "(&(objectClass=groupOfNames)(cn=%s))"
    projects_base: str = "ou=projects"
    class_attributes: tuple[str, ...] = ("puppetClass",)
    variable_attributes: tuple[str, ...] = ("puppetVar",)
    parent_attribute: str = "parentNode"
    # None: the mode's default ("none" for opslab, "all" for terminus).
    attribute_parameters: tuple[str, ...] | str | None = None
    api_url: str | None = None
    api_token_file: str | None = None
    api_timeout: float = 10.0
    # Cleartext http:// to another host (see check_api_url) only if said so.
    api_insecure: bool = False


class CacheSettings(NamedTuple):
    """Where the ENC keeps its last good answers, and for how long they count."""

    dir: str = "/var/cache/opslab/enc"
    max_age: float = 86400.0


class BranchSettings(NamedTuple):
    """Where branches come from and where they are deployed as environments."""

    remote: str = ""
    environments: str = "/etc/puppet/code/environments"
    cache: str = "/var/cache/opslab/branches"
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    keep_previous: int = 2
    keep_seconds: float = 3600.0
    git_timeout: float = 600.0
    lock_timeout: float = 300.0
    git_metadata: bool = False


class ApplySettings(NamedTuple):
    """How this host runs ``puppet apply`` on its environment."""

    certname: str | None = None
    state_dir: str = "/var/lib/opslab"
    timeout: float = 1800.0
    puppet: str = "puppet"
    puppet_state_dir: str | None = None
    enc: str | None = None


class ApiSettings(NamedTuple):
    """The coordination API: its store, its directory identity, who may do what."""

    database: str = "sqlite:////var/lib/opslab/api.sqlite"
    writer_dn: str | None = None
    writer_password_file: str | None = None
    people_base: str = "ou=people"
    hosts_base: str = "ou=hosts"
    operations_project: str = "operations"
    owners_create_projects: bool = False
    listen: str = "127.0.0.1:8150"
    workers: int = 2
    threads: int = 4
    max_body: int = 65536
    public_url: str = "http://localhost:8150"
    heads_ttl: float = 30.0
    # Hosts created through the API are named NAME.PROJECT.DOMAIN; None: the
    # API creates no hosts until it is set.
    domain: str | None = None
    # Alias entries (CNAMEs naming an instance by its id, for PowerDNS) go below
    # this, under the base DN; None: no aliases.
    dns_base: str | None = "ou=dns"
    # A person created through the API joins this project (None: none).
    default_project: str | None = None
    # Members of this project create people, as operations do (None: only operations).
    account_admins_project: str | None = None
    # The pages' login: the key that signs session cookies (a file of at least
    # 32 random bytes, the same for every worker); None: nobody can log in to
    # the pages (the public ones still show).
    session_secret_file: str | None = None
    # A login lasts this many seconds, then the person logs in again.
    session_lifetime: float = 28800.0
    # How many proxies in front of the API (nginx with TLS: 1) set X-Forwarded-For
    # and X-Forwarded-Proto; 0: those headers are not believed (anyone could send them).
    trusted_proxies: int = 0
    # Accounts of the bot role (the IRC bot): each may only post Server Admin
    # Log entries on behalf of a chat nick, nothing else.
    bot_accounts: tuple[str, ...] = ()
    # At most this many entries per nick and bot in any window of this many seconds.
    bot_nick_limit: int = 10
    bot_nick_window: float = 60.0
    # After this many wrong passwords for one account from one address within this many
    # seconds, that address may not try that account again until the window has passed.
    login_failure_limit: int = 20
    login_failure_window: float = 600.0


class AgentSettings(NamedTuple):
    """The instance agent: how often it checks, applies, and whom it lets in.

    It talks to the API named by ``enc.api_url`` with the token in
    ``enc.api_token_file``, the same the ENC uses on an instance.
    """

    check_interval: float = 60.0
    apply_interval: float = 1800.0
    splay: float = 60.0
    retry_interval: float = 300.0
    # The smoke tests run after every Puppet run and, between runs, every this
    # many seconds (0: only after runs), so a service that dies shows.
    smoke_interval: float = 300.0
    sudoers_file: str | None = "/etc/sudoers.d/opslab-project"
    visudo: str = "visudo"
    ssh_keys_timeout: float = 3.0


class AccountSettings(NamedTuple):
    """People as accounts on instances (see opslab.accounts)."""

    # Debian's FIRST_UID and UID_MAX: outside them are system accounts
    # (nobody is 65534), never a person's.
    min_uid: int = 1000
    max_uid: int = 60000
    # The numbers the API gives people (uidNumber) and projects (gidNumber)
    # start here: above the accounts an image makes itself (debian is 1000).
    first_id: int = 10000
    # Every person's primary group: Debian's "users", which every instance has.
    primary_gid: int = 100
    home_base: str = "/home"
    shell: str = "/bin/bash"


class InstanceSettings(NamedTuple):
    """Instances launched for hosts (opslab.instances): where, and what they boot."""

    provider: str = "local"  # "local" (containers of this machine's OS) or "openstack"
    # The metadata value that marks this installation's servers: the reaper
    # deletes only servers that carry it.
    installation: str = "opslab"
    image: str | None = None  # the default image (openstack: its name or id)
    flavor: str | None = None  # the default flavor (openstack: its name or id)
    network: str | None = None  # openstack: the network servers are attached to
    cloud: str | None = None  # openstack: the cloud's name in clouds.yaml
    clouds_file: str | None = None  # openstack: clouds.yaml (None: openstacksdk's places)
    request_timeout: float = 30.0  # one request to the cloud
    launch_timeout: float = 300.0  # until a server is ACTIVE
    delete_timeout: float = 120.0  # until a deleted server is gone
    # What an instance's user-data tells it (instance-agent/cloud-init.yaml):
    # where bootstrap.sh and the opslab package are, and how it reaches the
    # API, the directory and the Puppet repository; None: the API's own
    # api.public_url, ldap.uri and branches.remote.
    bootstrap_url: str | None = None
    package: str | None = None
    api_url: str | None = None
    ldap_uri: str | None = None
    remote: str | None = None
    bootstrap_options: tuple[str, ...] = ()  # more options for opslab agent bootstrap
    # A YAML file of the site's own cloud-config (an apt proxy, its CA, pip's index),
    # merged into every instance's user-data (opslab.instances.userdata); read at each
    # launch, so a change needs no restart.
    cloud_config_file: str | None = None
    # local: where instances live, the image they boot (None: LOCAL_ROOT/image,
    # built by `python -m opslab.instances.image`), and the /30s they are given.
    local_root: str = "/var/lib/opslab/instances"
    local_image: str | None = None
    local_subnet: str = "10.213.0.0/16"


class CiSettings(NamedTuple):
    """The CI harness (opslab.ci): which Gerrit comments start a run, and by whom."""

    # Gerrit projects (the control repository's name in Gerrit) whose changes are
    # tested; empty: no comment starts a run until one is named.
    projects: tuple[str, ...] = ()
    # Target branches whose changes are tested: shell patterns on the short name.
    branches: tuple[str, ...] = ("*",)
    # A comment starts a run when one of its lines is one of these (any case).
    trigger_phrases: tuple[str, ...] = ("check infra", "recheck")
    # The CI's own Gerrit account: its comments never start a run. None: no
    # comment starts a run until it is set.
    account: str | None = None
    # Members of this opslab project may start runs (their Gerrit username is
    # their directory uid).
    trigger_project: str = "operations"
    # An event seen again within this many seconds (both paths, a replay) is
    # dropped; at most dedup_size events are remembered.
    dedup_seconds: float = 3600.0
    dedup_size: int = 100000
    # The vote (opslab.ci.reporter): Gerrit's web URL (its REST API is below it, at
    # /a/), the account that votes (None: ci.account) and the file holding its HTTP
    # password; whom Gerrit e-mails about a vote; seconds one request may take; the
    # longest message posted, in characters.
    gerrit_url: str | None = None
    gerrit_user: str | None = None
    gerrit_password_file: str | None = None
    notify: str = "OWNER_REVIEWERS"
    request_timeout: float = 30.0
    message_limit: int = 16000
    # The change's code (opslab.ci.source): the Git URL of a project's repository,
    # {project} replaced by its name (None: GERRIT_URL/{project}); seconds a fetch may take.
    git_url: str | None = None
    fetch_timeout: float = 300.0
    # Gerrit's SSH daemon, for `gerrit stream-events` (opslab.ci.connection). None:
    # no events by SSH until the host is set.
    gerrit_ssh_host: str | None = None
    gerrit_ssh_port: int = 29418
    gerrit_ssh_user: str | None = None
    ssh_key_file: str | None = None  # the user's private key (None: refused until set)
    # Gerrit's host key is checked against this file, never accepted unseen. None:
    # the user's ~/.ssh/known_hosts.
    known_hosts_file: str | None = None
    ssh_timeout: float = 30.0  # connecting, the banner, authenticating, opening a channel
    ssh_keepalive: float = 60.0  # seconds between SSH keepalives (0: none)
    # No byte on the stream for this long: the connection is taken for dead and
    # made again (Gerrit sends no heartbeat: a quiet server is reconnected too).
    ssh_watchdog_seconds: float = 900.0
    # Reconnecting waits from reconnect_min_seconds, doubling, up to
    # reconnect_max_seconds, each wait jittered down by up to half.
    reconnect_min_seconds: float = 1.0
    reconnect_max_seconds: float = 120.0
    # Events by webhook (opslab.ci.webhook): the dispatcher listens on HOST:PORT for
    # the webhooks plugin's POSTs to /gerrit-events/SECRET, the secret read from
    # webhook_secret_file (None: no webhook endpoint).
    webhook_listen: str | None = None
    webhook_secret_file: str | None = None
    # The dispatcher's memory across restarts (the newest event seen, for the
    # catch-up); after a reconnect or a restart, at most catchup_limit changes updated
    # since then are read back through the REST API.
    state_dir: str = "/var/lib/opslab/ci"
    catchup_limit: int = 500
    # Jenkins (opslab.ci.jenkins): its URL, the user and the file holding its API
    # token, the job a run builds ("folder/job" for a job in a folder), seconds one
    # request may take, and how long a queued build may wait for an executor.
    jenkins_url: str | None = None
    jenkins_user: str | None = None
    jenkins_token_file: str | None = None
    jenkins_job: str = "opslab-ci"
    jenkins_timeout: float = 30.0
    build_start_timeout: float = 3600.0
    # The API, as the CI harness uses it: its URL, the CI's account (a person of the
    # directory, member of clone_project) and the file holding that person's password.
    api_url: str | None = None
    api_user: str | None = None
    api_password_file: str | None = None
    # Inside the job (`opslab ci run`): the project clones are made in; which projects
    # follow a branch ("BRANCH:PROJECT" entries; none for a branch: the projects whose
    # branch it is); the most hosts one run clones.
    clone_project: str = "ci"
    clone_projects: tuple[str, ...] = ()
    max_hosts: int = 5
    # Where the patch set is pushed as the branch PREFIX/CHANGE/PATCHSET-TIME-TOKEN for
    # the clones to apply (None: the fetch URL, ci.git_url), and the private key the
    # CI's account logs in to its clones with (its public key is in the directory).
    push_url: str | None = None
    branch_prefix: str = "ci"
    clone_key_file: str | None = None
    # Seconds from a clone's launch to its first report; for each apply over SSH; for
    # a whole run. A clone older than run_timeout is the reaper's (a run killed).
    clone_timeout: float = 900.0
    apply_timeout: float = 900.0
    run_timeout: float = 3600.0


class LogbotSettings(NamedTuple):
    """The IRC log bot (opslab.logbot, docs/logbot.md): the network, its channels, the API."""

    # The IRC server (None: the bot refuses to start until it is set). TLS, the server's
    # certificate checked against ca_file (None: the system's trust store) and its name;
    # cleartext only with tls: false.
    server: str | None = None
    port: int = 6697
    tls: bool = True
    ca_file: str | None = None
    nick: str = "opslab-log"
    realname: str = "opslab Server Admin Log (!log PROJECT message)"
    # SASL PLAIN as this services account, its password in a file of mode 0600 (None: no
    # SASL); when set, the bot does not go on without it.
    sasl_user: str | None = None
    sasl_password_file: str | None = None
    channels: tuple[str, ...] = ()
    # The network's services accounts (IRCv3 account-tag) are the directory's uids: the
    # bot passes a sender's account to the API, which names that person in the entry.
    # Only for a network whose accounts the community hands out.
    accounts_are_uids: bool = False
    # The API: its URL, the bot account (api.bot_accounts) and the file (mode 0600) with
    # its password; seconds one request may take; links in replies start with link_url
    # (None: api_url).
    api_url: str | None = None
    api_user: str | None = None
    api_password_file: str | None = None
    api_timeout: float = 10.0
    link_url: str | None = None
    # Seconds to connect and register; quiet this long, the bot pings the server; nothing
    # heard this long, it reconnects.
    connect_timeout: float = 30.0
    ping_interval: float = 60.0
    ping_timeout: float = 180.0
    # Reconnecting waits from reconnect_min_seconds, doubling, up to reconnect_max_seconds,
    # each wait jittered down by up to half.
    reconnect_min_seconds: float = 2.0
    reconnect_max_seconds: float = 300.0
    # The bot's own replies: at most reply_burst at once, then one every reply_interval
    # seconds; a reply beyond that is dropped, never queued into a flood.
    reply_burst: int = 4
    reply_interval: float = 2.0


class Config(NamedTuple):
    """The whole configuration file, one attribute per section."""

    ldap: LdapSettings = LdapSettings()
    enc: EncSettings = EncSettings()
    cache: CacheSettings = CacheSettings()
    branches: BranchSettings = BranchSettings()
    apply: ApplySettings = ApplySettings()
    api: ApiSettings = ApiSettings()
    agent: AgentSettings = AgentSettings()
    accounts: AccountSettings = AccountSettings()
    instances: InstanceSettings = InstanceSettings()
    ci: CiSettings = CiSettings()
    logbot: LogbotSettings = LogbotSettings()
    source: str = "embedded defaults"

    @property
    def projects_base_dn(self) -> str:
        """The DN below which project entries are searched."""
        return f"{self.enc.projects_base},{self.ldap.base}"

    @property
    def hosts_base_dn(self) -> str:
        """The DN below which the API creates host entries."""
        return f"{self.api.hosts_base},{self.ldap.base}"

    @property
    def people_base_dn(self) -> str:
        """The DN below which people are (uid=NAME)."""
        return f"{self.api.people_base},{self.ldap.base}"


_SECTIONS: dict[str, type[Any]] = {
    "ldap": LdapSettings,
    "enc": EncSettings,
    "cache": CacheSettings,
    "branches": BranchSettings,
    "apply": ApplySettings,
    "api": ApiSettings,
    "agent": AgentSettings,
    "accounts": AccountSettings,
    "instances": InstanceSettings,
    "ci": CiSettings,
    "logbot": LogbotSettings,
}
_ENC_MODES = ("opslab", "terminus")
_PROVIDERS = ("local", "openstack")
_NOTIFY = ("NONE", "OWNER", "OWNER_REVIEWERS", "ALL")  # Gerrit's ReviewInput.notify
MAX_CLONES = 50  # the hosts of one CI run the API keeps (api/openapi.yaml, CiRunChanges)


def add_config_option(parser: "argparse.ArgumentParser", default: str | None = None) -> None:
    """Give a command the ``--config FILE`` option every opslab command takes."""
    parser.add_argument("--config", metavar="FILE", default=default,
                        help=f"configuration file (default: ${ENVIRONMENT_VARIABLE}, "
                        f"else {DEFAULT_PATH})")


def load(path: str | None = None) -> Config:
    """Load the configuration from ``path`` or the usual places (see module doc)."""
    explicit = path or os.environ.get(ENVIRONMENT_VARIABLE)
    if explicit:
        return _from_file(explicit)
    if os.path.exists(DEFAULT_PATH):
        return _from_file(DEFAULT_PATH)
    return Config()


def _from_file(path: str) -> Config:
    try:
        document = yamlcache.load(path)
    except OSError as error:
        raise ConfigError(f"cannot read configuration file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"configuration file {path} is not UTF-8 text") from None
    except yamlcache.YamlError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return _from_document(document, path)


def parse(text: str, source: str) -> Config:
    """Build a Config from YAML text; ``source`` names it in error messages."""
    try:
        document = yamlcache.parse(text)
    except yamlcache.YamlError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    return _from_document(document, source)


def _from_document(document: Any, source: str) -> Config:
    """Build a Config from a parsed document; ``source`` names it in error messages."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {_kind(document)}")
    unknown = sorted(str(key) for key in document if key not in _SECTIONS)
    for name, section in document.items():
        if name in _SECTIONS and not isinstance(section, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping")
        if name in _SECTIONS:
            fields = _SECTIONS[name]._fields
            unknown += sorted(f"{name}.{key}" for key in section if key not in fields)
    if unknown:
        raise ConfigError(f"{source}: unknown keys: {', '.join(unknown)}")
    sections = {
        name: _build(cls, document.get(name) or {}, name, source)
        for name, cls in _SECTIONS.items()
    }
    config = Config(**sections, source=source)
    _check(config, source)
    return config


def _build(cls: type[Any], values: dict[str, Any], section: str, source: str) -> Any:
    kwargs = {}
    for name in cls._fields:
        if name in values:
            key = f"{section}.{name}"
            kwargs[name] = _coerce(values[name], cls.__annotations__[name], key, source)
    return cls(**kwargs)


def _coerce(value: Any, expected: Any, key: str, source: str) -> Any:
    """Check ``value`` against a field's type annotation, converting lists to tuples."""
    options = get_args(expected) if _is_union(expected) else (expected,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ConfigError(f"{source}: {key} must not be negative, got {value}")
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0:
                raise ConfigError(f"{source}: {key} must not be negative, got {value}")
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if (
            get_origin(option) is tuple
            and isinstance(value, list)
            and all(isinstance(item, str) for item in value)
        ):
            return tuple(value)
    wanted = " or ".join(_describe(option) for option in options)
    raise ConfigError(f"{source}: {key} must be {wanted}, got {_kind(value)} {value!r}")


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _describe(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if get_origin(annotation) is tuple:
        return "a list of strings"
    return {bool: "true or false", float: "a number", int: "a whole number", str: "a string"}[
        annotation
    ]


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _check(config: Config, source: str) -> None:
    """Rules that span more than one key's type."""
    enc = config.enc
    if enc.mode not in _ENC_MODES:
        raise ConfigError(f"{source}: enc.mode must be one of {', '.join(_ENC_MODES)}")
    for key in ("node_filter", "project_filter"):
        template = getattr(enc, key)
        if "%s" not in template or not _balanced(template):
            raise ConfigError(
                f"{source}: enc.{key} must be an LDAP filter in parentheses containing %s"
            )
    if isinstance(enc.attribute_parameters, str) and enc.attribute_parameters not in (
        "all",
        "none",
    ):
        raise ConfigError(
            f"{source}: enc.attribute_parameters must be 'all', 'none' or a list of attributes"
        )
    try:
        check_ldap_uri(config.ldap.uri, config.ldap.starttls, config.ldap.insecure)
        if enc.api_url is not None:
            check_api_url(enc.api_url, enc.api_insecure)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    if config.accounts.min_uid > config.accounts.max_uid:
        raise ConfigError(f"{source}: accounts.min_uid ({config.accounts.min_uid}) is above "
                          f"accounts.max_uid ({config.accounts.max_uid}): no uid would be a "
                          "person's")
    if config.instances.provider not in _PROVIDERS:
        raise ConfigError(f"{source}: instances.provider must be one of {', '.join(_PROVIDERS)}")
    if not config.accounts.min_uid <= config.accounts.first_id <= config.accounts.max_uid:
        raise ConfigError(f"{source}: accounts.first_id ({config.accounts.first_id}) must lie "
                          f"between accounts.min_uid and accounts.max_uid")
    for key in ("home_base", "shell"):
        if not getattr(config.accounts, key).startswith("/"):
            raise ConfigError(f"{source}: accounts.{key} must be an absolute path")
    _check_ci(config.ci, source)
    for section, key in (("ldap", "connect_timeout"), ("ldap", "timeout"), ("ldap", "deadline"),
                         ("branches", "git_timeout"), ("apply", "timeout"),
                         ("agent", "check_interval"), ("agent", "apply_interval"),
                         ("agent", "retry_interval"), ("agent", "ssh_keys_timeout"),
                         ("instances", "request_timeout"), ("instances", "launch_timeout"),
                         ("instances", "delete_timeout"), ("ci", "dedup_seconds"),
                         ("ci", "dedup_size"), ("ci", "request_timeout"),
                         ("ci", "message_limit"), ("ci", "fetch_timeout"),
                         ("ci", "catchup_limit"), ("ci", "jenkins_timeout"),
                         ("ci", "build_start_timeout"), ("ci", "max_hosts"),
                         ("ci", "clone_timeout"), ("ci", "apply_timeout"),
                         ("ci", "run_timeout")):
        if getattr(getattr(config, section), key) <= 0:
            raise ConfigError(f"{source}: {section}.{key} must be greater than 0")


def _check_ci(ci: CiSettings, source: str) -> None:
    if not ci.trigger_phrases:
        raise ConfigError(f"{source}: ci.trigger_phrases is empty: no comment could start a run")
    for phrase in ci.trigger_phrases:
        if not phrase.strip() or has_control_characters(phrase.replace("\t", " ")):
            raise ConfigError(f"{source}: ci.trigger_phrases: {_shown(phrase)} is not a phrase "
                              "(one line of text)")
    for key in ("projects", "branches"):
        for value in getattr(ci, key):
            if not value or _has_space(value):
                raise ConfigError(f"{source}: ci.{key}: {_shown(value)} is not a "
                                  f"{key[:-1] if key == 'projects' else 'branch pattern'}")
    if ci.notify not in _NOTIFY:
        raise ConfigError(f"{source}: ci.notify must be one of {', '.join(_NOTIFY)}")
    if ci.gerrit_url is not None and not ci.gerrit_url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: ci.gerrit_url {_shown(ci.gerrit_url)} is not an "
                          "http:// or https:// URL")
    if ci.gerrit_user is not None and (not ci.gerrit_user or _has_space(ci.gerrit_user)):
        raise ConfigError(f"{source}: ci.gerrit_user {_shown(ci.gerrit_user)} is not a "
                          "Gerrit username")
    if ci.account is not None and (not ci.account or _has_space(ci.account)):
        raise ConfigError(f"{source}: ci.account {_shown(ci.account)} is not a Gerrit username")
    try:
        validate_project_name(ci.trigger_project)
    except InvalidName as error:
        raise ConfigError(f"{source}: ci.trigger_project: {error}") from None
    _check_ci_ssh(ci, source)
    _check_ci_jobs(ci, source)


def _check_ci_jobs(ci: CiSettings, source: str) -> None:
    for key in ("jenkins_url", "api_url"):
        value = getattr(ci, key)
        if value is not None and not value.startswith(("http://", "https://")):
            raise ConfigError(f"{source}: ci.{key} {_shown(value)} is not an http:// or "
                              "https:// URL")
    if ci.webhook_listen is not None:
        host, _, port = ci.webhook_listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"{source}: ci.webhook_listen {_shown(ci.webhook_listen)} is "
                              "not HOST:PORT")
        if ci.webhook_secret_file is None:
            raise ConfigError(f"{source}: ci.webhook_listen is set but "
                              "ci.webhook_secret_file is not: the endpoint needs its secret")
    if ci.max_hosts > MAX_CLONES:
        raise ConfigError(f"{source}: ci.max_hosts is over {MAX_CLONES}, the most hosts a "
                          "CI run's record holds")
    try:
        validate_project_name(ci.clone_project)
    except InvalidName as error:
        raise ConfigError(f"{source}: ci.clone_project: {error}") from None
    for entry in ci.clone_projects:
        branch, _, project = entry.partition(":")
        try:
            validate_project_name(project)
        except InvalidName:
            raise ConfigError(f"{source}: ci.clone_projects: {_shown(entry)} is not "
                              "BRANCH:PROJECT") from None
        if not branch or _has_space(branch):
            raise ConfigError(f"{source}: ci.clone_projects: {_shown(entry)} is not "
                              "BRANCH:PROJECT")
    if not ci.branch_prefix or _has_space(ci.branch_prefix) or ci.branch_prefix.strip("/") \
            != ci.branch_prefix:
        raise ConfigError(f"{source}: ci.branch_prefix {_shown(ci.branch_prefix)} must be a "
                          "branch name without blanks or a leading or trailing /")


def _check_ci_ssh(ci: CiSettings, source: str) -> None:
    for key in ("gerrit_ssh_host", "gerrit_ssh_user"):
        value = getattr(ci, key)
        if value is not None and (not value or _has_space(value)):
            raise ConfigError(f"{source}: ci.{key} {_shown(value)} must be a name without "
                              "blanks")
    if not 0 < ci.gerrit_ssh_port < 65536:
        raise ConfigError(f"{source}: ci.gerrit_ssh_port must be a TCP port (1 to 65535)")
    for key in ("ssh_timeout", "ssh_watchdog_seconds", "reconnect_min_seconds"):
        if getattr(ci, key) <= 0:
            raise ConfigError(f"{source}: ci.{key} must be greater than 0")
    if ci.reconnect_max_seconds < ci.reconnect_min_seconds:
        raise ConfigError(f"{source}: ci.reconnect_max_seconds is below "
                          "ci.reconnect_min_seconds")


# How the checks below name the settings they speak of: the configuration's
# keys here, bootstrap's options there.
LDAP_NAMES = {"uri": "ldap.uri", "starttls": "ldap.starttls: true",
              "ca_file": "ldap.ca_file", "insecure": "ldap.insecure: true"}
API_NAMES = {"url": "enc.api_url", "insecure": "enc.api_insecure: true"}


def check_ldap_uri(uri: str, starttls: bool, insecure: bool,
                   names: Mapping[str, str] = LDAP_NAMES) -> str:
    """Return ``uri`` if it is a usable directory URI, else raise ConfigError.

    One ``ldap://``, ``ldaps://`` or ``ldapi://`` URI. Cleartext ``ldap://``
    to a host other than this one needs StartTLS, or ``insecure``: the
    directory's answers decide who logs in (SSH keys) and who is a member,
    so anyone on the path could otherwise let themselves in. Never a list:
    libldap splits the URI at commas and white space and tries each part in
    turn, so ``ldaps://A,ldap://B`` would fall back to cleartext to B.
    """
    import re

    parts = [part for part in re.split(r"[,\s]+", uri) if part]
    if len(parts) > 1 or "," in uri:
        raise ConfigError(f"{names['uri']} {_shown(uri)} is a list of URIs (libldap splits "
                          "it at commas and white space, and tries each in turn, whatever "
                          "its scheme): give exactly one")
    if not uri.startswith(("ldap://", "ldaps://", "ldapi://")) or _has_space(uri):
        raise ConfigError(f"{names['uri']} {_shown(uri)} is not an ldap://, ldaps:// or "
                          "ldapi:// URI")
    if starttls and not uri.startswith("ldap://"):
        raise ConfigError(f"{names['starttls']} is for ldap:// URIs; {names['uri']} "
                          f"{_shown(uri)} is not one")
    if uri.startswith("ldapi://"):
        return uri  # a socket on this machine: no host to check (nor urllib to import)
    import urllib.parse

    try:
        host = urllib.parse.urlsplit(uri).hostname or ""
    except ValueError:
        raise ConfigError(f"{names['uri']} {_shown(uri)} is not an ldap://, ldaps:// or "
                          "ldapi:// URI") from None
    if uri.startswith("ldap://") and not starttls and not insecure and host \
            and not is_loopback(host):
        raise ConfigError(
            f"{names['uri']} {_shown(uri)} is cleartext to {host}: anyone on the way could "
            f"change who may log in. Use ldaps://, or {names['starttls']} (with "
            f"{names['ca_file']}), or {names['insecure']} to accept it")
    return uri


def check_api_url(url: str, insecure: bool, names: Mapping[str, str] = API_NAMES) -> str:
    """Return ``url`` if it is a usable URL of the API, else raise ConfigError.

    ``http://`` or ``https://`` with a host, no user or password (the host
    token authenticates). Cleartext ``http://`` to a host other than this one
    needs ``insecure``: the host token and the target (who gets sudo) would
    travel readable and changeable by anyone on the way.
    """
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        # .port parses the port only when asked, raising ValueError for a bad one.
        usable = (parts.scheme in ("http", "https") and bool(parts.hostname)
                  and (parts.port or 0) >= 0 and not _has_space(url))
    except ValueError:
        usable = False
    if not usable:
        raise ConfigError(f"{names['url']} {_shown(url)} is not an http:// or https:// URL "
                          "with a host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{names['url']} must not carry a user or password: the host token "
                          "authenticates this instance")
    if parts.scheme == "http" and not insecure and parts.hostname \
            and not is_loopback(parts.hostname):
        raise ConfigError(
            f"{names['url']} {_shown(url)} is cleartext to {parts.hostname}: the host token "
            "and who gets sudo would travel readable and changeable by anyone on the way. "
            f"Use https://, or {names['insecure']} to accept it")
    return url


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: localhost, 127.0.0.0/8, ::1. Where traffic
    may travel in cleartext (one rule for the directory, the API, the webhook endpoint and
    the members' client)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _has_space(text: str) -> bool:
    return any(char.isspace() for char in text) or has_control_characters(text)


def _shown(value: str) -> str:
    """``value`` quoted for a message, cut short: input, not necessarily printable."""
    return repr(value[:200])


def _balanced(template: str) -> bool:
    if not (template.startswith("(") and template.endswith(")")):
        return False
    depth = 0
    for char in template:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0
