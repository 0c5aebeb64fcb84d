"""People: their accounts (created by operations or account admins) and their SSH keys.

A person is ``uid=NAME`` below the people base: ``inetOrgPerson`` for the
name, ``posixAccount`` for the account every instance of their projects
gives them (a uidNumber from :mod:`opslab.api.ids`, the primary group
``accounts.primary_gid``, home ``accounts.home_base/NAME``, shell
``accounts.shell``), ``ldapPublicKey`` for the keys ``opslab-ssh-keys``
hands to sshd. The password the API makes, at creation or at a reset, is
shown once; the directory keeps only its hash.

Who may do what: operations and members of ``api.account_admins_project``
create people (with their first keys); a person resets their own password
and manages their own keys, and so does operations (a password or a key is a
login as its owner: no one else, account admins included, may set one). Everyone in the
community reads people (name, projects, public keys).
"""

import logging
import secrets
from typing import Any

import ldap

from opslab import accounts
from opslab.directory import (
    DirectoryError,
    DirectoryUnavailable,
    Entry,
    attribute_values,
    fill_filter,
)
from opslab.names import InvalidName, has_format_characters, validate_user_name
from opslab.sshkeys import InvalidKey, PublicKey, parse

from . import context, ids, projects
from .audit import recorded_modify, recorded_write
from .auth import Actor, is_operator, person, project_membership, standing
from .contract import Body
from .directory import Attributes
from .errors import Invalid, Refused
from .store import Change

OBJECT_CLASSES = ["inetOrgPerson", "posixAccount", "ldapPublicKey"]
MAX_KEYS = 20
# What a person's public document is made of (see document()).
DOCUMENT_ATTRIBUTES = ["objectClass", "uid", "cn", "uidNumber", "homeDirectory", "loginShell",
                       "sshPublicKey"]
PASSWORD_BYTES = 18  # 144 random bits: 24 characters

log = logging.getLogger(__name__)


def view(actor: Actor | None, uid: str) -> dict[str, Any]:
    """A person as the community sees them: name, account, projects and public keys."""
    person(actor)
    entry = _read(uid)
    directory = context.directory()
    found = directory.search(context.config().projects_base_dn, fill_filter(
        "(&(objectClass=groupOfNames)(member=%s))", directory.person_dn(uid)))
    names = sorted(value for _, project in found for value in attribute_values(project, "cn"))
    return {**document(entry), "projects": names}


def create(actor: Actor | None, read_body: Body) -> tuple[dict[str, Any], str]:
    """Create the person ``read_body`` asks for: (their document, their password, given
    this once). They join ``api.default_project`` when it is set."""
    _may_create_people(actor)
    body = read_body()
    uid = _valid_name(body["uid"])
    name = " ".join(body["name"].split())
    if not name or has_format_characters(name):
        raise Invalid("name: must hold visible characters, and no invisible formatting "
                      "(such as right-to-left overrides)")
    keys = [_parsed(text, f"ssh_keys[{index}]") for index, text in
            enumerate(body.get("ssh_keys", []))]
    config = context.config()
    directory = context.directory()
    dn = directory.person_dn(uid)
    if directory.read(dn, ["uid"]) is not None:
        raise Refused(409, f"a person {uid!r} exists")
    if config.api.default_project:
        # Checked first: a person made and then not enrolled would be half-made.
        project_membership(config.api.default_project)
    entry: Attributes = {
        "objectClass": OBJECT_CLASSES, "uid": [uid], "cn": [name],
        "sn": [name.rsplit(" ", 1)[-1]], "mail": [body["mail"]] if body.get("mail") else [],
        "uidNumber": [str(ids.take())], "gidNumber": [str(config.accounts.primary_gid)],
        "homeDirectory": [f"{config.accounts.home_base.rstrip('/')}/{uid}"],
        "loginShell": [config.accounts.shell],
        "sshPublicKey": _unique_lines(keys),
    }
    password = _new_password()

    def write() -> None:
        directory.add(dn, entry)
        directory.writer().set_password(dn, password)

    with context.session() as session:
        change = Change(actor=str(actor), action="person.create", target=uid, project=None,
                        before=None, after=document(entry))
        recorded_write(session, change, write=write, undo=lambda: directory.delete(dn))
    if config.api.default_project:
        projects.enrol(actor, config.api.default_project, dn)
    return document(_read(uid)), password


def reset_password(actor: Actor | None, uid: str) -> dict[str, str]:
    """Give ``uid`` a new password, made and set as at creation: ``{"uid", "password"}``,
    the password given this once. A locked account stays locked."""
    name, entry = _may_reset_password(actor, uid)
    dn = context.directory().person_dn(name)
    writer = context.directory().writer()
    # A password modify makes slapd's ppolicy overlay delete the lock (OpenLDAP's
    # ppolicy.c, at every password change), so a lock is put back at once.
    lock = entry.first(accounts.LOCKED_ATTRIBUTE)
    password = _new_password()
    lock_lost: list[Exception] = []

    def write() -> None:
        writer.set_password(dn, password)
        if lock is not None:
            try:
                writer.modify(dn, [(ldap.MOD_REPLACE, accounts.LOCKED_ATTRIBUTE, [lock])])
            except (DirectoryUnavailable, DirectoryError) as error:
                # The password is changed: raising here would drop the audit record
                # of a change the directory holds. Said below, once it is recorded.
                lock_lost.append(error)

    public = document(entry.attributes)
    with context.session() as session:
        change = Change(actor=str(actor), action="person.password.reset", target=name,
                        project=None, before=public, after=public)
        recorded_write(session, change, write=write, undo=_no_undo)
    if lock_lost:
        log.critical("the password of %s was reset and its lock could not be put back: it "
                     "may be unlocked; set %s: %s on %s again (%s)", name,
                     accounts.LOCKED_ATTRIBUTE, lock, dn, lock_lost[0])
        raise Refused(503, f"{name}'s password was reset, but their lock could not be put "
                           f"back ({lock_lost[0]}): lock the account again")
    return {"uid": name, "password": password}


def add_key(actor: Actor | None, uid: str, read_body: Body) -> dict[str, Any]:
    """Add a public key to ``uid``'s keys (the person, or operations)."""
    dn, entry = _may_change_keys(actor, uid)
    key = _parsed(read_body()["key"], "key")
    stored = _keys(entry)
    if any(known is not None and known.fingerprint == key.fingerprint for known in stored):
        raise Refused(409, f"{uid} has the key {key.fingerprint} already")
    if len(stored) >= MAX_KEYS:
        raise Refused(409, f"{uid} has {len(stored)} keys, the most a person may have")
    changes: list[tuple[int, str, list[str]]] = [(ldap.MOD_ADD, "sshPublicKey", [key.line])]
    if "ldappublickey" not in {value.lower() for value in attribute_values(entry,
                                                                            "objectClass")}:
        changes.insert(0, (ldap.MOD_ADD, "objectClass", ["ldapPublicKey"]))
    after = {**entry, "sshPublicKey": [*attribute_values(entry, "sshPublicKey"), key.line]}
    _modify(actor, "person.key.add", uid, dn, entry, changes, after)
    return _key_json(key)


def remove_key(actor: Actor | None, uid: str, fingerprint: str) -> None:
    """Remove the key of ``fingerprint`` (``SHA256:...``) from ``uid``'s keys."""
    dn, entry = _may_change_keys(actor, uid)
    lines = attribute_values(entry, "sshPublicKey")
    found = [line for line, key in zip(lines, _keys(entry), strict=True)
             if key is not None and key.fingerprint == fingerprint]
    if not found:
        raise Refused(404, f"{uid} has no key {fingerprint[:60]!r}")
    after = {**entry, "sshPublicKey": [line for line in lines if line not in found]}
    _modify(actor, "person.key.remove", uid, dn, entry,
            [(ldap.MOD_DELETE, "sshPublicKey", found)], after)


def document(entry: Attributes) -> dict[str, Any]:
    """A person's public document (never their password or its hash)."""
    def first(name: str) -> str | None:
        return next(iter(attribute_values(entry, name)), None)

    uid = first("uid") or ""
    number = first("uidNumber")
    return {
        "uid": uid, "name": first("cn"),
        "uid_number": int(number) if number and number.isdigit() else None,
        "home": first("homeDirectory"), "shell": first("loginShell"),
        "ssh_keys": [_key_json(key) if key is not None else {"key": line, "invalid": True}
                     for line, key in zip(attribute_values(entry, "sshPublicKey"),
                                          _keys(entry), strict=True)],
    }


def _read(uid: str) -> Attributes:
    return _account(uid, DOCUMENT_ATTRIBUTES)[1].attributes


def _account(uid: str, attributes: list[str]) -> tuple[str, Entry]:
    """The person ``uid`` (their name, checked) and their entry's ``attributes``;
    Refused (404) if there is no such person."""
    try:
        name = validate_user_name(uid)
    except InvalidName:
        raise Refused(404, f"no person {uid[:40]!r}") from None
    directory = context.directory()
    entry = directory.writer().read(directory.person_dn(name), attributes)
    if entry is None:
        raise Refused(404, f"no person {uid!r}")
    return name, entry


def _new_password() -> str:
    """A new person's password, and a reset one: the only place passwords are made."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def _no_undo() -> None:
    # The old password exists only as the directory's hash: a reset cannot be taken
    # back, so its audit record stays pending (api/audit.py) instead of claiming an undo.
    raise RuntimeError("a password reset cannot be undone")


def _keys(entry: Attributes) -> list[PublicKey | None]:
    """Each stored key parsed (None: one written by hand that is not a valid key)."""
    parsed: list[PublicKey | None] = []
    for line in attribute_values(entry, "sshPublicKey"):
        try:
            parsed.append(parse(line))
        except InvalidKey:
            parsed.append(None)
    return parsed


def _key_json(key: PublicKey) -> dict[str, Any]:
    return {"key": key.line, "type": key.type, "bits": key.bits,
            "fingerprint": key.fingerprint, "comment": key.comment}


def _parsed(text: str, field: str) -> PublicKey:
    try:
        return parse(text)
    except InvalidKey as error:
        raise Invalid(f"{field}: {error}") from None


def _unique_lines(keys: list[PublicKey]) -> list[str]:
    return list({key.fingerprint: key.line for key in keys}.values())


def _valid_name(uid: str) -> str:
    try:
        name = validate_user_name(uid)
    except InvalidName as error:
        raise Invalid(f"uid: {error}") from None
    reason = accounts.reserved_reason(name)
    if reason:
        raise Invalid(f"uid: {reason}")
    return name


def _may_create_people(actor: Actor | None) -> None:
    dn = person(actor)
    if is_operator(dn) or _is_account_admin(dn):
        return
    raise Refused(403, f"only {_creators()} may create people")


def _is_account_admin(dn: str) -> bool:
    admins = context.config().api.account_admins_project
    return standing(admins, dn).member if admins else False


def _creators() -> str:
    admins = context.config().api.account_admins_project
    return "operations" + (f" and members of {admins!r}" if admins else "")


def _may_reset_password(actor: Actor | None, uid: str) -> tuple[str, Entry]:
    """The person's name and entry (with what opslab.accounts reads), if ``actor`` may
    reset their password: the person, and operations. Not account admins, although they
    create people: the new password is a login to the API as that person, who may add
    keys, so an account admin could become anyone (the rule for keys, for the same
    reason). Never a system or package account's, whoever asks: the API does not make such
    names logins."""
    caller = person(actor)
    name, entry = _account(uid, [*DOCUMENT_ATTRIBUTES, *accounts.ATTRIBUTES])
    if actor is not None and actor.name != name and not is_operator(caller):
        raise Refused(403, f"only {name} and operations may reset {name}'s password")
    reason = accounts.reserved_reason(name) or accounts.system_account_reason(
        name, entry, context.config().accounts)
    if reason:
        raise Refused(403, f"the API gives no password to {name}: {reason}")
    return name, entry


def _may_change_keys(actor: Actor | None, uid: str) -> tuple[str, Attributes]:
    """The person's DN and entry, if ``actor`` may change their keys: the person, and
    operations. A key is a login as its owner (and sudo on their projects' instances), so
    no one else may add one, account admins included (they give keys at creation)."""
    dn = person(actor)
    entry = _read(uid)
    target = context.directory().person_dn(uid)
    if actor is not None and actor.name == attribute_values(entry, "uid")[0]:
        return target, entry
    if is_operator(dn):
        return target, entry
    raise Refused(403, f"only {uid} and operations may change {uid}'s keys")


def _modify(actor: Actor | None, action: str, uid: str, dn: str, before: Attributes,
            changes: list[tuple[int, str, list[str]]], after: Attributes) -> None:
    recorded_modify(Change(actor=str(actor), action=action, target=uid, project=None,
                           before=document(before), after=document(after)), dn, changes)
