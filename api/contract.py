"""The OpenAPI document as the one declaration of the documents the API takes.

``api/openapi.yaml`` (OpenAPI 3.1, whose schemas are JSON Schema 2020-12) is
served to clients and is what every request body is validated against: a
route asks for :func:`request_document`, which finds the operation the
request was routed to and validates the body against that operation's own
``requestBody`` schema. So the document cannot say one thing while a route
checks another, and there is no hand-written type check per route.

Before the schema sees a body, :func:`parse_json` refuses what JSON allows
but no field of this API can hold: NaN and Infinity, numbers that overflow,
integers beyond 64 bits (Puppet's), duplicate keys, nesting deeper than
:data:`MAX_DEPTH`, and text with NUL or lone surrogates (which no database
stores). Every refusal is :class:`Invalid` with a message naming the field.
"""

import json
import math
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from flask import Flask, request
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import best_match

from .errors import Invalid

DOCUMENT = Path(__file__).resolve().parent / "openapi.yaml"
MAX_DEPTH = 32
_INT64 = 2**63
_FLASK_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _ecma_pattern(pattern: str) -> "re.Pattern[str]":
    # ECMA-262's "$" is the end of the string; Python's also matches before a
    # final newline, which would let "name\n" pass a pattern meant to refuse it.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


_compiled = lru_cache(maxsize=None)(_ecma_pattern)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> \
        Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


class Contract:
    """The OpenAPI document, and a validator for each operation's request body.

    Validators work on schemas whose ``$ref``s were replaced, once, by what
    they point at (the document has no recursive schema): resolving a
    reference on every validation cost more than the validation itself
    (1.1 ms against 0.4 ms for a run report).
    """

    def __init__(self, path: Path = DOCUMENT) -> None:
        self.document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
        self._bodies: dict[tuple[str, str], Any] = {}
        for template, item in self.document["paths"].items():
            for method, operation in item.items():
                schema = (operation.get("requestBody", {}).get("content", {})
                          .get("application/json", {}).get("schema")) \
                    if isinstance(operation, dict) else None
                if schema is not None:
                    self._bodies[(template, method.upper())] = self.at(
                        "paths", template, method, "requestBody", "content", "application/json",
                        "schema")

    def at(self, *path: str) -> Any:
        """A validator for the schema at ``path`` in the document (its ``$ref``s resolved)."""
        schema: Any = self.document
        for part in path:
            schema = schema[part]
        return _Validator(self._inlined(schema, 0),
                          format_checker=Draft202012Validator.FORMAT_CHECKER)

    def _inlined(self, node: Any, depth: int) -> Any:
        """``node`` with every ``{"$ref": "#/..."}`` replaced by what it points at."""
        if depth > MAX_DEPTH:
            raise ValueError("the OpenAPI document's schemas refer to each other in a loop")
        if isinstance(node, list):
            return [self._inlined(item, depth + 1) for item in node]
        if not isinstance(node, dict):
            return node
        if isinstance(node.get("$ref"), str):
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            resolved = self._inlined(target, depth + 1)
            rest = {key: value for key, value in node.items() if key != "$ref"}
            # In JSON Schema 2020-12 a $ref's siblings apply too: both must hold.
            return {"allOf": [resolved, self._inlined(rest, depth + 1)]} if rest else resolved
        return {key: self._inlined(value, depth + 1) for key, value in node.items()}

    def schema(self, name: str) -> Any:
        """A validator for the component schema ``name``."""
        return self.at("components", "schemas", name)

    def body_validator(self, rule: str, method: str) -> Any:
        """The validator of the body of the operation a Flask ``rule`` serves, or None."""
        return self._bodies.get((_FLASK_PARAMETER.sub(r"{\1}", rule), method.upper()))

    def check(self, validator: Any, document: Any) -> Any:
        """``document`` if ``validator`` accepts it, else Invalid naming the field."""
        error = best_match(validator.iter_errors(document))
        if error is not None:
            raise Invalid(describe(error))
        return document


def describe(error: ValidationError) -> str:
    """A message for people: where in the body, and what was wrong there."""
    path = ".".join(str(part) for part in error.absolute_path)
    where = path or "the body"
    inside = f"{path}: " if path else ""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return (f"{inside}unknown fields: {', '.join(unknown)}"
                + (f" (allowed: {', '.join(allowed)})" if allowed else ""))
    if error.validator == "required":
        return f"{inside}{error.message.replace(' is a required property', ' is required')}"
    if error.validator == "type" and not path:
        return f"the body must be a JSON {error.validator_value}"
    if error.validator == "type":
        wanted = error.validator_value
        kinds = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return f"{where} must be of type {kinds}"
    described = schema.get("x-error")
    if described:
        return f"{where}: {_shown(error.instance)} {described}"
    # jsonschema's own message starts with the whole value, which a long one cuts off
    # before it says what was wrong.
    if error.validator in ("maxItems", "maxLength") and isinstance(error.instance, list | str):
        unit = "items" if error.validator == "maxItems" else "characters"
        return (f"{where}: {len(error.instance)} {unit}, more than the "
                f"{error.validator_value} allowed")
    return f"{where}: {error.message[:300]}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Parsing: what json.loads would accept but the API must not.

def _refuse_constant(name: str) -> Any:
    raise Invalid(f"the body contains {name}, which is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Invalid(f"the number {text[:40]} is too large")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise Invalid(f"the body names the key {key[:40]!r} twice")
        document[key] = value
    return document


def parse_json(data: bytes) -> Any:
    """The JSON document ``data``, with every value one this API could store; else Invalid."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("the body is not UTF-8 text") from None
    try:
        document = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite,
                              object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise Invalid(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as error:
        if isinstance(error, Invalid):
            raise
        raise Invalid("the body is not valid JSON") from None
    _check_values(document)
    return document


def _check_values(document: Any) -> None:
    """Walk the document without recursion: depth, text and integer bounds."""
    stack: list[tuple[Any, str, int]] = [(document, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Invalid(f"the body is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, f"{where}{'.' if where else ''}{key[:40]}", is_key=True)
                stack.append((item, f"{where}{'.' if where else ''}{key[:40]}", depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{where}.{index}" if where else str(index), depth + 1)
                         for index, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, int) and not isinstance(value, bool) \
                and not -_INT64 <= value < _INT64:
            raise Invalid(f"{where or 'the body'}: {str(value)[:30]}... does not fit in 64 bits")


def _check_text(text: str, where: str, is_key: bool = False) -> None:
    what = f"the key {where}" if is_key else (where or "the body")
    if "\0" in text:
        raise Invalid(f"{what} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{what} contains a lone surrogate (\\ud800-\\udfff), "
                      "which is not a character") from None


# A request's body as services take it: read (and validated) only once the
# caller has been found allowed, so a refusal never depends on the body.
Body = Callable[[], dict[str, Any]]


def body_for(rule: str, method: str, document: Any) -> dict[str, Any]:
    """``document`` as the operation ``method`` ``rule`` (a Flask rule or an OpenAPI path)
    takes it for its body: the same parsing as a request's (what no field may hold) and the
    same schema; else Invalid, in the API's words. The pages' forms come here."""
    from flask import current_app

    contract: Contract = current_app.extensions["opslab.contract"]
    validator = contract.body_validator(rule, method)
    if validator is None:
        raise RuntimeError(f"{method} {rule} takes no body in the OpenAPI document")
    checked: dict[str, Any] = contract.check(validator, parse_json(json.dumps(document).encode()))
    return checked


def request_document(app: Flask | None = None) -> Any:
    """The current request's JSON body, validated against its operation's schema.

    Raises Invalid (422) for a body that is not JSON, not storable, or not
    what the operation declares.
    """
    from flask import current_app

    contract: Contract = (app or current_app).extensions["opslab.contract"]
    if not request.is_json:
        raise Invalid("the body must be JSON (Content-Type: application/json)")
    document = parse_json(request.get_data(cache=True))
    rule = request.url_rule.rule if request.url_rule is not None else ""
    validator = contract.body_validator(rule, request.method)
    if validator is None:
        raise Invalid(f"{request.method} {rule} takes no body")
    return contract.check(validator, document)
