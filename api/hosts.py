"""A host as the API sees it, and its entry in the directory.

JSON in, JSON out::

    {"name": "web2.web.example.org", "project": "web",
     "classes": ["role::web"], "class_parameters": {"motd": {"message": "hi"}},
     "variables": {"cluster": "eqiad"}, "branch": null, "addresses": ["192.0.2.12"]}

Everything Puppet or LDAP would reject is refused here, with a message that
names the field: class and variable names by Puppet's rules, variables that
Puppet reserves, values puppetVar (IA5) cannot hold, branches git or the
environment mapping would refuse, addresses that are not IPv4.
"""

import ipaddress
import json
import re
from typing import Any

from opslab.names import RESERVED_VARIABLES, InvalidName, validate_branch, validate_certname

from .directory import Attributes

CLASS_NAME = re.compile(r"(?:[a-z][a-z0-9_]*)(?:::[a-z][a-z0-9_]*)*")
VARIABLE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
FIELDS = ("name", "project", "classes", "class_parameters", "variables", "branch", "addresses")
EDITABLE = ("classes", "class_parameters", "variables", "branch", "addresses")
MAX_ITEMS = 200
MAX_VALUE = 4096
OBJECT_CLASSES = ["dNSDomain", "domainRelatedObject", "puppetClient", "opslabNode"]


class Invalid(ValueError):
    """A request body that cannot become a host entry; the message names the field."""


def parse(body: Any, *, creating: bool) -> dict[str, Any]:
    """Check a host document; returns it normalised. Raises Invalid."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    allowed = FIELDS if creating else EDITABLE
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    host: dict[str, Any] = {}
    if creating:
        try:
            host["name"] = validate_certname(_string(body.get("name"), "name"))
        except InvalidName as error:
            raise Invalid(f"name: {error}") from None
    if "classes" in body:
        host["classes"] = [_class_name(value, "classes") for value in _list(body, "classes")]
    if "variables" in body:
        host["variables"] = _variables(body["variables"])
    if "class_parameters" in body:
        host["class_parameters"] = _class_parameters(body["class_parameters"])
    if "branch" in body:
        branch = body["branch"]
        if branch is not None:
            try:
                branch = validate_branch(_string(branch, "branch"))
            except InvalidName as error:
                raise Invalid(f"branch: {error}") from None
        host["branch"] = branch
    if "addresses" in body:
        host["addresses"] = [_address(value) for value in _list(body, "addresses")]
    return host


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{field} must be a string")
    return value


def _list(body: dict[str, Any], field: str) -> list[Any]:
    value = body[field]
    if not isinstance(value, list):
        raise Invalid(f"{field} must be a list")
    if len(value) > MAX_ITEMS:
        raise Invalid(f"{field} has more than {MAX_ITEMS} items")
    return value


def _class_name(value: Any, field: str) -> str:
    name = _string(value, field)
    if not CLASS_NAME.fullmatch(name) or len(name) > 200:
        raise Invalid(f"{field}: {name!r} is not a Puppet class name "
                      "(lowercase words of a-z, 0-9, _ joined by ::)")
    return name


def _variables(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_ITEMS:
        raise Invalid(f"variables must be an object of at most {MAX_ITEMS} names")
    variables = {}
    for name, text in value.items():
        if not VARIABLE_NAME.fullmatch(name) or len(name) > 100:
            raise Invalid(f"variables: {name!r} is not a Puppet variable name")
        if name in RESERVED_VARIABLES:
            raise Invalid(f"variables: {name!r} is reserved by Puppet")
        if not isinstance(text, str):
            raise Invalid(f"variables.{name} must be a string (puppetVar holds text; "
                          "use class_parameters for typed values)")
        if len(text) > MAX_VALUE or not text.isascii() or any(c in text for c in "\r\n\0"):
            raise Invalid(f"variables.{name} must be one line of ASCII text, "
                          f"at most {MAX_VALUE} characters")
        variables[name] = text
    return variables


def _class_parameters(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or len(value) > MAX_ITEMS:
        raise Invalid(f"class_parameters must be an object of at most {MAX_ITEMS} classes")
    result = {}
    for class_name, parameters in value.items():
        _class_name(class_name, "class_parameters")
        if not isinstance(parameters, dict):
            raise Invalid(f"class_parameters.{class_name} must be an object")
        for name, parameter in parameters.items():
            if not VARIABLE_NAME.fullmatch(name):
                raise Invalid(f"class_parameters.{class_name}: {name!r} is not a parameter name")
            if len(json.dumps(parameter)) > MAX_VALUE:
                raise Invalid(f"class_parameters.{class_name}.{name} is too large")
        result[class_name] = parameters
    return result


def _address(value: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(_string(value, "addresses")))
    except ValueError:
        raise Invalid(f"addresses: {value!r} is not an IPv4 address") from None


def to_entry(host: dict[str, Any]) -> Attributes:
    """The directory attributes of a complete host document."""
    return {
        "objectClass": OBJECT_CLASSES,
        "dc": [host["name"]],
        "associatedDomain": [host["name"]],
        "opslabProject": [host["project"]],
        "puppetClass": list(host.get("classes", [])),
        "puppetVar": [f"{k}={v}" for k, v in host.get("variables", {}).items()],
        "opslabClassParameter": [
            f"{class_name}::{name}={json.dumps(value, separators=(',', ':'))}"
            for class_name, parameters in host.get("class_parameters", {}).items()
            for name, value in parameters.items()
        ],
        "environment": [host["branch"]] if host.get("branch") else [],
        "aRecord": list(host.get("addresses", [])),
    }


def from_entry(entry: Attributes) -> dict[str, Any]:
    """The host document of a directory entry."""
    def values(name: str) -> list[str]:
        return next((v for k, v in entry.items() if k.lower() == name.lower()), [])

    class_parameters: dict[str, dict[str, Any]] = {}
    for assignment in values("opslabClassParameter"):
        target, _, encoded = assignment.partition("=")
        class_name, _, name = target.rpartition("::")
        class_parameters.setdefault(class_name, {})[name] = json.loads(encoded)
    variables = dict(value.partition("=")[::2] for value in values("puppetVar"))
    return {
        # Entries written for Puppet's old terminus are named by cn only.
        "name": (values("associatedDomain") or values("dc") or values("cn") or [""])[0],
        "project": next(iter(values("opslabProject")), None),
        "classes": values("puppetClass"),
        "class_parameters": class_parameters,
        "variables": variables,
        "branch": next(iter(values("environment")), None),
        "addresses": values("aRecord"),
    }
