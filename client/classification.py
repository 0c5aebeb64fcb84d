"""What the command line says about classes, class parameters and variables.

``--param CLASS.NAME=VALUE`` takes VALUE as YAML, so ``8080`` is a number,
``true`` a boolean, ``[a, b]`` a list, ``{k: v}`` a mapping and ``''`` (or
nothing) an empty text; dates stay text (JSON has none). ``--var NAME=VALUE``
takes VALUE as it is: variables are text.
"""

import argparse
import json
from typing import Any

import yaml

from .session import UsageError


class _Loader(yaml.SafeLoader):
    """YAML's safe loader without timestamps: ``2024-01-01`` stays text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers
            if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def add_options(parser: argparse.ArgumentParser, removals: bool) -> None:
    """The options that classify a host; with ``removals``, those that take away too."""
    parser.add_argument("--class", dest="classes", action="append", default=[],
                        metavar="CLASS", help="add this Puppet class (repeatable)")
    parser.add_argument("--param", dest="params", action="append", default=[],
                        metavar="CLASS.NAME=VALUE",
                        help="set a class parameter; VALUE is YAML (repeatable)")
    parser.add_argument("--var", dest="variables", action="append", default=[],
                        metavar="NAME=VALUE", help="set a variable, as text (repeatable)")
    if removals:
        parser.add_argument("--remove-class", action="append", default=[], metavar="CLASS",
                            help="take this class away (repeatable)")
        parser.add_argument("--remove-param", action="append", default=[],
                            metavar="CLASS.NAME", help="take a class parameter away "
                            "(repeatable)")
        parser.add_argument("--remove-var", action="append", default=[], metavar="NAME",
                            help="take a variable away (repeatable)")


def assignment(text: str, option: str) -> tuple[str, str]:
    """``NAME=VALUE`` as (NAME, VALUE)."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise UsageError(f"{option} {text[:100]!r} is not NAME=VALUE")
    return name, value


def parameter_name(text: str, option: str) -> tuple[str, str]:
    """``CLASS.NAME`` as (CLASS, NAME): the class is everything before the last dot."""
    cls, dot, name = text.rpartition(".")
    if not dot or not cls or not name:
        raise UsageError(f"{option} {text[:100]!r} does not name CLASS.NAME")
    return cls, name


def yaml_value(text: str, where: str) -> Any:
    """``text`` read as YAML, checked to be JSON; '' for nothing."""
    if not text.strip():
        return ""
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        raise UsageError(f"{where}: the value is not YAML: "
                         f"{getattr(error, 'problem', None) or error}") from None
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: the value is not one JSON can hold") from None
    return value


def changed(current: dict[str, Any], arguments: argparse.Namespace,
            removals: bool) -> dict[str, Any]:
    """The fields of ``current`` (a host's classes, class_parameters, variables) that the
    options change, whole, as the API replaces them."""
    fields: dict[str, Any] = {}
    classes = list(current.get("classes") or [])
    dropped = arguments.remove_class if removals else []
    if arguments.classes or dropped:
        for name in dropped:
            if name not in classes:
                raise UsageError(f"--remove-class {name!r}: the host has no such class")
        classes = [name for name in classes if name not in dropped]
        classes += [name for name in dict.fromkeys(arguments.classes) if name not in classes]
        fields["classes"] = classes
    parameters = {cls: dict(values) for cls, values in
                  (current.get("class_parameters") or {}).items()}
    if arguments.params or (removals and arguments.remove_param):
        for text in arguments.params:
            key, value = assignment(text, "--param")
            cls, name = parameter_name(key, "--param")
            parameters.setdefault(cls, {})[name] = yaml_value(value, f"--param {key}")
        for text in arguments.remove_param if removals else []:
            cls, name = parameter_name(text, "--remove-param")
            if name not in parameters.get(cls, {}):
                raise UsageError(f"--remove-param {text!r}: the host has no such parameter")
            del parameters[cls][name]
            if not parameters[cls]:
                del parameters[cls]
        fields["class_parameters"] = parameters
    variables = dict(current.get("variables") or {})
    if arguments.variables or (removals and arguments.remove_var):
        for text in arguments.variables:
            name, value = assignment(text, "--var")
            variables[name] = value
        for name in arguments.remove_var if removals else []:
            if name not in variables:
                raise UsageError(f"--remove-var {name!r}: the host has no such variable")
            del variables[name]
        fields["variables"] = variables
    return fields
