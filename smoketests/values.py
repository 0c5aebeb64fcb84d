"""The ``${...}`` references in checks, and the values that fill them.

A reference is one of exactly these, and nothing else (no expression, no
call, no lookup of anything but a name, so a check file can never make the
checker run code):

    ${param.NAME}   a parameter of the check's class (as Puppet applied it)
    ${var.NAME}     a variable of the host's classification (the ENC's parameters)
    ${fact.NAME}    a fact: hostname, fqdn, domain, ipaddress, ipaddress6, and
                    external facts (facts.d files, FACTER_NAME variables)
    ${certname}     the host's certname
    ${target}       the address checks look at: --target's, else ipaddress

``$${`` is a literal ``${``. A value that is one reference alone keeps its
type (``port: ${param.port}`` is a number); inside a longer text the value
must be a text, number or boolean. A reference whose value is missing
makes the check fail, saying which (so does one that is there but null,
Puppet's undef); a parameter Puppet marks Sensitive is never used (it
would end up in messages and reports).

In a shell line (a ``command``'s ``run`` text) every value is filled in
quoted for the shell, as one word, so that a value never adds words or
commands to it: a parameter is set through the API by whoever may change
the host, while the line itself was reviewed with the control repository.
A reference there may therefore not stand inside quotes (the quotes would
be part of the value).
"""

import re
import shlex
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
# A ${ that is neither a literal nor a reference's start (``${{...}}``, ``${a.${b}}``).
_ANY = re.compile(r"\$\$\{|\$\{([^{}]*)\}|\$\{")
_REFERENCE = re.compile(r"(param|var|fact)\.([A-Za-z_][A-Za-z0-9_]{0,199})|target|certname")
_WRITE = "write ${param.NAME}, ${var.NAME}, ${fact.NAME}, ${certname} or ${target}"


class Missing(Exception):
    """A reference has no value here (the message says which and why)."""


@dataclass(frozen=True)
class Values:
    """What references of one class's checks are filled with."""

    params: Mapping[str, Any]
    variables: Mapping[str, Any]
    facts: Mapping[str, Any]
    certname: str | None
    target: str | None
    sensitive: Set[str] = field(default_factory=frozenset)


def problems(text: str) -> list[str]:
    """What is wrong with the references in ``text`` (checked when the checks are read)."""
    found = []
    position = 0
    while (match := _ANY.search(text, position)) is not None:
        position = match.end()
        inner = match.group(1)
        if match.group() == "${":
            end = _closing(text, position)
            if end is None:
                found.append("an unclosed ${ (write $${ for a literal ${)")
                break
            shown = text[match.start():end]
            found.append(f"{shown[:100]!r}{'…' if len(shown) > 100 else ''} is not a "
                         f"reference: {_WRITE}")
            position = end
        elif inner is not None and not _REFERENCE.fullmatch(inner):
            found.append(f"${{{inner}}} is not a reference: {_WRITE}")
    return found


def shell_problems(line: str) -> list[str]:
    """What is wrong with the references of a shell line: those inside quotes (a value is
    filled in quoted already, and would keep the quotes as part of it)."""
    found = []
    quote: str | None = None
    index = 0
    while index < len(line):
        char = line[index]
        if char == "\\" and quote != "'":
            index += 2
            continue
        if line.startswith("$${", index):
            index += 3
            continue
        match = _TOKEN.match(line, index) if line.startswith("${", index) else None
        if match is not None:
            if quote is not None:
                found.append(f"{match.group()} stands inside quotes: in a shell line a value "
                             f"is filled in quoted for the shell already; write it unquoted")
            index = match.end()
            continue
        if quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        index += 1
    return found


def _closing(text: str, start: int) -> int | None:
    """Where the braces opened just before ``start`` are closed (past the }), or None."""
    depth = 1
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return index + 1
    return None


def fill(value: Any, values: Values, shell: bool = False) -> Any:
    """``value`` (a check's field) with every reference replaced; Missing if one has none.
    ``shell``: ``value`` is a shell line, whose values are filled in quoted (module doc)."""
    if isinstance(value, str):
        return _fill_text(value, values, shell)
    if isinstance(value, list):
        return [fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, values) for key, item in value.items()}
    return value


def _fill_text(text: str, values: Values, shell: bool = False) -> Any:
    whole = _TOKEN.fullmatch(text)
    if whole is not None and whole.group(1) is not None and not shell:
        return _lookup(whole.group(1), values)

    def replace(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return "${"
        found = _lookup(match.group(1), values)
        if isinstance(found, dict | list) or found is None:
            raise Missing(f"${{{match.group(1)}}} is a {type(found).__name__}, which cannot "
                          f"stand inside a text")
        filled = str(found).lower() if isinstance(found, bool) else str(found)
        return shlex.quote(filled) if shell else filled

    return _TOKEN.sub(replace, text)


def _lookup(reference: str, values: Values) -> Any:
    if reference == "certname":
        if values.certname is None:
            raise Missing("${certname}: the host's certname is not known")
        return values.certname
    if reference == "target":
        target = values.target or values.facts.get("ipaddress")
        if not target:
            raise Missing("${target}: no --target was given and this host has no IPv4 address")
        return target
    space, _, name = reference.partition(".")
    if space == "param":
        if name in values.sensitive:
            raise Missing(f"${{param.{name}}} is Sensitive: a check cannot use it")
        source, where = values.params, "the class's parameters"
    elif space == "var":
        source, where = values.variables, "the host's variables"
    else:
        source, where = values.facts, "the host's facts"
    if name not in source:
        raise Missing(f"${{{reference}}}: {name} is not among {where}")
    # Puppet's undef (an ENC's null): nothing to check against, and no text to fill in.
    if source[name] is None:
        raise Missing(f"${{{reference}}}: {name} has no value")
    return source[name]
