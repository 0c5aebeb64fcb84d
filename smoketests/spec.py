"""Check files: where they are, what they may say, and reading them safely.

Each module of the control repository declares the checks of its classes
in one file beside its manifests, ``modules/MODULE/checks.yaml``: a
mapping of the module's class names to lists of checks, so a change to a
class carries its checks and a reviewer sees both in one diff::

    greeter:
      - name: answers with its greeting
        http: {url: "http://127.0.0.1:${param.port}/", body: "${param.greeting}"}
        wait: {timeout: 30, interval: 1}     # until it holds, or 30 s have passed
      - name: answers on the host's address
        port: {port: "${param.port}"}
        outside: true                        # seen from outside (--target), not by the host
        timeout: 5                           # each attempt (default 10 s)

A check has a ``name`` (unique in its class), exactly one kind key (the
kinds of :mod:`.kinds`, each with its fields) and may have ``timeout``,
``wait`` and ``outside``. Everything is checked when the file is read, and
every problem is named by file, class, check and key. A file may only
declare checks of its own module's classes. It is refused whole when it
is a symbolic link (or sits below one), larger than MAX_FILE, or uses
YAML anchors, aliases, tags or duplicate keys.
"""

import os
import stat
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from opslab.names import InvalidName, module_of, validate_class_name

from . import kinds, values

FILE_NAME = "checks.yaml"
MAX_FILE = 256 * 1024
MAX_CHECKS = 200  # in one class
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 600.0
MAX_WAIT = 3600.0
# Levels of nesting a check file may have: a check needs six (class, list, check, kind,
# field, list); PyYAML composes recursively, and a few hundred "[" would crash it.
MAX_DEPTH = 20
# What a check's name may not hold: it is shown in terminals, logs, JUnit and the API, where
# a control character or a bidirectional override would hide or rewrite what is shown.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})
_COMMON = frozenset({"name", "timeout", "wait", "outside"})


@dataclass(frozen=True)
class Check:
    """One declared check of one class."""

    cls: str
    name: str
    kind: str
    fields: dict[str, Any]
    timeout: float = DEFAULT_TIMEOUT
    wait: float = 0.0  # seconds to keep trying until it holds; 0: one attempt
    interval: float = 1.0
    outside: bool = False
    source: str = ""  # modules/MODULE/checks.yaml


class CheckFileError(Exception):
    """Check files that cannot be used; ``problems`` names each by file, class, check, key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Loader(yaml.SafeLoader):
    """Plain YAML only: no anchors or aliases (an alias bomb multiplies a small file), no
    tags, no duplicate keys (the second would silently hide the first's checks), no
    nesting deeper than MAX_DEPTH."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if self.depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} "
                                              f"levels", event.start_mark)
        # An alias event names its anchor too.
        if getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(None, None, "anchors and aliases are not allowed",
                                              event.start_mark)
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!":
            raise yaml.composer.ComposerError(None, None, f"tags ({tag}) are not allowed",
                                              event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value",
                                                        key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def checks_for(tree: str, classes: Iterable[str]) -> list[Check]:
    """The checks of ``classes`` in the control repository at ``tree``, in class order.

    Every module file involved is read whole and must be valid, so a bad
    check of one class is not hidden by running only the others. A class
    whose module has no check file has no checks.
    """
    wanted = list(dict.fromkeys(classes))
    # Not "no checks": a mistyped --tree would pass every time.
    if not os.path.isdir(os.path.join(tree, "modules")):
        raise CheckFileError([f"{tree}: there is no control repository there "
                              f"(no modules folder)"])
    problems: list[str] = []
    by_module: dict[str, dict[str, list[Check]]] = {}
    for name in wanted:
        try:
            validate_class_name(name)
        except InvalidName as error:
            problems.append(str(error))
            continue
        module = module_of(name)
        if module not in by_module:
            try:
                by_module[module] = read_module(tree, module)
            except CheckFileError as error:
                problems += error.problems
                by_module[module] = {}
    if problems:
        raise CheckFileError(problems)
    return [check for name in wanted
            for check in by_module.get(module_of(name), {}).get(name, [])]


def all_checks(tree: str) -> list[Check]:
    """Every check of every module of the tree (to validate a change as a whole)."""
    problems: list[str] = []
    found: list[Check] = []
    modules = os.path.join(tree, "modules")
    names = sorted(os.listdir(modules)) if os.path.isdir(modules) else []
    for module in names:
        if not os.path.lexists(os.path.join(modules, module, FILE_NAME)):
            continue
        try:
            for checks in read_module(tree, module).values():
                found += checks
        except CheckFileError as error:
            problems += error.problems
    if problems:
        raise CheckFileError(problems)
    return found


def read_module(tree: str, module: str) -> dict[str, list[Check]]:
    """The checks in ``modules/MODULE/checks.yaml`` by class; {} if there is no such file."""
    source = f"modules/{module}/{FILE_NAME}"
    text = _read(tree, module, source)
    if text is None:
        return {}
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        raise CheckFileError([f"{source}: not valid YAML: {error}"]) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise CheckFileError([f"{source}: must map class names to lists of checks"])
    problems: list[str] = []
    checks: dict[str, list[Check]] = {}
    for cls, items in document.items():
        where = f"{source}: class {cls}"
        try:
            validate_class_name(str(cls))
        except InvalidName as error:
            problems.append(f"{source}: {error}")
            continue
        if module_of(str(cls)) != module:
            problems.append(f"{where}: belongs to module {module_of(str(cls))}, "
                            f"so its checks go in modules/{module_of(str(cls))}/{FILE_NAME}")
            continue
        if not isinstance(items, list):
            problems.append(f"{where}: must be a list of checks")
            continue
        if len(items) > MAX_CHECKS:
            problems.append(f"{where}: has {len(items)} checks, more than {MAX_CHECKS}")
            continue
        names: set[str] = set()
        checks[str(cls)] = []
        for number, item in enumerate(items, start=1):
            check, found = _check(str(cls), number, item, source)
            problems += found
            if check is not None:
                if check.name in names:
                    problems.append(f"{where}: check {check.name!r}: the name is used twice")
                names.add(check.name)
                checks[str(cls)].append(check)
    if problems:
        raise CheckFileError(problems)
    return checks


def _read(tree: str, module: str, source: str) -> str | None:
    """The file's text, or None if there is none; refused if it is not plainly in the tree."""
    if not module or module.startswith(".") or "/" in module:
        raise CheckFileError([f"{source}: {module!r} is not a module name"])
    root = os.path.realpath(tree)
    path = os.path.join(root, "modules", module, FILE_NAME)
    if not os.path.lexists(path):
        return None
    # Every part of the path below the tree must be what it says, not a link elsewhere.
    if os.path.realpath(path) != path:
        raise CheckFileError([f"{source}: is or lies below a symbolic link; check files "
                              f"must be plain files of the repository"])
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise CheckFileError([f"{source}: cannot be read: {error.strerror}"]) from None
    with os.fdopen(descriptor, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CheckFileError([f"{source}: is not a regular file"])
        data = stream.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise CheckFileError([f"{source}: is larger than {MAX_FILE // 1024} KiB"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckFileError([f"{source}: is not UTF-8 ({error.reason} at byte "
                              f"{error.start})"]) from None


def _check(cls: str, number: int, item: Any, source: str) -> tuple[Check | None, list[str]]:
    """One check read from its mapping, or None and the problems that name it."""
    where = f"{source}: class {cls}: check {number}"
    if not isinstance(item, dict):
        return None, [f"{where}: must be a mapping with a name and one kind of check"]
    name = item.get("name")
    if isinstance(name, str) and name.strip():
        where = f"{source}: class {cls}: check {name!r}"
    problems = []
    if not isinstance(name, str) or not name.strip() or len(name) > 200 \
            or any(unicodedata.category(char) in _HIDDEN for char in name):
        problems.append(f"{where}: name: must be a text of 1 to 200 characters, without "
                        f"control or formatting characters")
    unknown = [str(key) for key in item if key not in _COMMON and key not in kinds.NAMES]
    if unknown:
        problems.append(f"{where}: {', '.join(unknown)}: unknown key(s); a check takes name, "
                        f"timeout, wait, outside and one of {', '.join(kinds.NAMES)}")
    present = [key for key in kinds.NAMES if key in item]
    if len(present) != 1:
        problems.append(f"{where}: must have exactly one kind of check "
                        f"({', '.join(kinds.NAMES)}), not {len(present)}")
        return None, problems
    kind = present[0]
    outside = item.get("outside", False)
    if not isinstance(outside, bool):
        problems.append(f"{where}: outside: must be true or false")
        outside = False
    timeout = _seconds(item, "timeout", DEFAULT_TIMEOUT, MAX_TIMEOUT, where, problems)
    wait, interval = 0.0, 1.0
    if "wait" in item:
        spec = item["wait"]
        if not isinstance(spec, dict) or set(spec) - {"timeout", "interval"} \
                or "timeout" not in spec:
            problems.append(f"{where}: wait: must be a mapping with timeout and, "
                            f"optionally, interval (seconds)")
        else:
            wait = _seconds(spec, "timeout", 0.0, MAX_WAIT, f"{where}: wait", problems)
            interval = _seconds(spec, "interval", 1.0, 60.0, f"{where}: wait", problems)
    fields = item[kind]
    problems += _fields(kind, fields, outside, f"{where}: {kind}")
    if problems:
        return None, problems
    return Check(cls, str(name), kind, fields, timeout, wait, interval, outside, source), []


def _seconds(spec: dict[str, Any], key: str, default: float, maximum: float, where: str,
             problems: list[str]) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 < value <= maximum:
        problems.append(f"{where}: {key}: must be a number of seconds above 0, "
                        f"at most {maximum:g}")
        return default
    return float(value)


def _fields(kind: str, fields: Any, outside: bool, where: str) -> list[str]:
    module = kinds.kind(kind)
    if not isinstance(fields, dict):
        return [f"{where}: must be a mapping of its fields ({', '.join(module.FIELDS)})"]
    problems = [f"{where}: {key}: unknown field; {kind} takes {', '.join(module.FIELDS)}"
                for key in kinds.unknown_keys(fields, module.FIELDS)]
    for key, field in module.FIELDS.items():
        if key not in fields:
            if field.required:
                problems.append(f"{where}: {key}: is required")
            continue
        problems += [f"{where}: {key}: {problem}" for problem in _value_problems(
            fields[key], field)]
    if not problems:
        found = module.problem(fields, outside)
        if found is not None:
            problems.append(f"{where}: {found}")
    return problems


def _value_problems(value: Any, field: kinds.Field) -> list[str]:
    """Problems of a field's value as written: references are checked for their form
    here and for their value's type once filled (opslab.smoketests.runner)."""
    texts = _texts(value)
    found = [problem for text in texts for problem in values.problems(text)]
    if field.shell_line and isinstance(value, str):
        found += values.shell_problems(value)
    if found:
        return found
    if any("${" in text.replace("$${", "") for text in texts):
        return []
    problem = field.problem(value)
    return [problem] if problem else []


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _texts(item)]
    return []
