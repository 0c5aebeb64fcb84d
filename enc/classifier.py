"""Classification: from directory entries to Puppet classes, parameters and environment.

The hierarchy, most specific first (the first layer that sets a thing wins):

* opslab mode: the host entry, its ``parentNode`` ancestors (nearest first),
  its project, the ``default`` entry. A node without an entry of its own is
  unknown, whatever ``default`` says.
* terminus mode, exactly as Puppet's LDAP node terminus: the first entry found
  for the certname, then the short name, then ``default``, followed by its
  ``parentNode`` ancestors. No projects.

Classes are the union of all layers; variables and class parameters come
from the most specific layer that sets them, and every value keeps the DN of
the entry it came from (``opslab-enc --explain`` prints them).
"""

import json
from collections.abc import Iterable
from typing import Any

import ldap
import ldap.dn

from opslab.config import Config
from opslab.directory import Directory, Entry, Search, fill_filter
from opslab.names import (
    DEFAULT_BRANCH,
    DEFAULT_ENTRY_NAME,
    RESERVED_VARIABLES,
    InvalidName,
    environment_for_branch,
    host_project,
    project_label,
    short_name,
)

ENVIRONMENT_ATTRIBUTE = "environment"  # puppet.schema's; holds the branch
PROJECT_ATTRIBUTE = "opslabProject"
CLASS_PARAMETER_ATTRIBUTE = "opslabClassParameter"


class UnknownNode(LookupError):
    """The directory answered, and it has no entry for this node."""


class ClassificationError(ValueError):
    """The directory's entries for a node are inconsistent (loop, missing parent, ...)."""


class Value:
    """A parameter value and the DN of the entry it came from."""

    __slots__ = ("origin", "value")

    def __init__(self, value: Any, origin: str) -> None:
        self.value = value
        self.origin = origin


class Classification:
    """What the directory says about one node, with the origin of every part."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.environment: str | None = None
        self.branch: str | None = None
        self.environment_origin: str | None = None
        self.classes: dict[str, list[str]] = {}  # class -> DNs that name it
        self.parameters: dict[str, Value] = {}
        self.class_parameters: dict[str, dict[str, Value]] = {}
        self.unused_class_parameters: dict[str, dict[str, Value]] = {}
        self.overridden: list[tuple[str, Value, str]] = []  # (name, loser, winner DN)
        self.layers: list[tuple[str, str]] = []  # (role, DN), most specific first
        self.project: Entry | None = None  # the project's entry, in opslab mode
        self.warnings: list[str] = []

    def to_enc(self) -> dict[str, Any]:
        """The mapping Puppet's exec node terminus expects."""
        classes: list[str] | dict[str, dict[str, Any]]
        if self.class_parameters:
            classes = {
                name: {
                    key: value.value for key, value in self.class_parameters.get(name, {}).items()
                }
                for name in self.classes
            }
        else:
            classes = list(self.classes)
        result: dict[str, Any] = {"classes": classes}
        if self.environment is not None:
            result["environment"] = self.environment
        result["parameters"] = {name: value.value for name, value in self.parameters.items()}
        return result


class Classifier:
    """Classifies nodes from the directory according to a Config."""

    def __init__(self, directory: Directory, config: Config) -> None:
        self.directory = directory
        self.config = config
        self.settings = config.enc
        self.terminus = config.enc.mode == "terminus"
        parameters = config.enc.attribute_parameters
        if parameters is None:
            parameters = "all" if self.terminus else "none"
        self._attribute_parameters = parameters

    def _node_search(self, name: str) -> Search:
        return Search(self.config.ldap.base, fill_filter(self.settings.node_filter, name))

    def _project_search(self, name: str) -> Search:
        return Search(
            self.config.projects_base_dn,
            fill_filter(self.settings.project_filter, name),
            optional_base=True,
        )

    def classify(self, certname: str) -> Classification:
        """Classify ``certname`` (already validated by opslab.names.validate_certname).

        Raises UnknownNode, ClassificationError, or the directory's errors.
        """
        names = [certname]
        if short := short_name(certname):
            names.append(short)
        names.append(DEFAULT_ENTRY_NAME)
        searches = [self._node_search(name) for name in names]
        # The project named by the FQDN is fetched speculatively in the same
        # round trip; most hosts follow the name.project.domain convention.
        guessed_project = None if self.terminus else project_label(certname)
        if guessed_project:
            searches.append(self._project_search(guessed_project))
        results = self.directory.search(searches)
        found = {name: self._nodes(hits) for name, hits in zip(names, results, strict=False)}

        if self.terminus:
            layers = self._terminus_layers(names, found)
        else:
            project_hits = results[len(names)] if guessed_project else []
            layers = self._opslab_layers(certname, names, found, guessed_project, project_hits)
        return self._merge(certname, layers)

    def _nodes(self, hits: list[Entry]) -> list[Entry]:
        """The node entries among ``hits``: in opslab mode a project entry is never a node
        (it carries puppetClient for its project-wide classes, and the same cn)."""
        if self.terminus:
            return hits
        return [entry for entry in hits if not _below(entry.dn, self.config.projects_base_dn)]

    def claims(self, certname: str) -> list[tuple[str, Entry]]:
        """The entries an entry of ``certname``'s own would take over from, with the reason.

        Those the ENC finds by the certname or its short name (today they
        classify it, or they are another host of that name), and those that
        name it as their parent. A new entry for ``certname`` must not shadow
        any of them: it would choose their classes and branch.
        """
        names = [certname, *([short] if (short := short_name(certname)) else [])]
        parent = f"({self.settings.parent_attribute}=%s)"
        results = self.directory.search([
            *(self._node_search(name) for name in names),
            Search(self.config.ldap.base, fill_filter(parent, certname)),
        ])
        claims = [(f"it is found by the name {name!r}", entry)
                  for name, hits in zip(names, results, strict=False)
                  for entry in self._nodes(hits)]
        claims += [(f"it names {certname!r} as its {self.settings.parent_attribute}", entry)
                   for entry in results[-1]]
        return claims

    def _terminus_layers(
        self, names: list[str], found: dict[str, list[Entry]]
    ) -> list[tuple[str, Entry]]:
        for name in names:
            if found[name]:
                # The terminus kept the last entry its search returned.
                entry = found[name][-1]
                role = "default" if name == DEFAULT_ENTRY_NAME else "node"
                return [(role, entry), *self._parents(entry)]
        raise UnknownNode("no entry for this node and no default entry")

    def _opslab_layers(
        self,
        certname: str,
        names: list[str],
        found: dict[str, list[Entry]],
        guessed_project: str | None,
        project_hits: list[Entry],
    ) -> list[tuple[str, Entry]]:
        host = None
        for name in names[:-1]:
            if found[name]:
                host = _single(found[name], f"node name {name!r}")
                break
        if host is None:
            raise UnknownNode("no entry for this node")
        layers = [("host", host), *self._parents(host)]

        project_name, named = host_project(host.first(PROJECT_ATTRIBUTE), certname)
        if project_name is not None:
            if project_name.lower() != (guessed_project or "").lower():
                project_hits = self.directory.search([self._project_search(project_name)])[0]
            if project_hits:
                layers.append(("project", _single(project_hits, f"project {project_name!r}")))
            elif named:
                raise ClassificationError(
                    f"{host.dn} names project {project_name!r}, which has no entry "
                    f"below {self.config.projects_base_dn}"
                )

        default = found[DEFAULT_ENTRY_NAME]
        if default:
            layers.append(("default", _single(default, "the default entry")))
        return layers

    def _parents(self, entry: Entry) -> list[tuple[str, Entry]]:
        """The parentNode chain of ``entry``, nearest first, with loop detection."""
        parent_attribute = self.settings.parent_attribute
        seen = [_cn_of(entry.dn) or entry.first("cn")]
        chain: list[tuple[str, Entry]] = []
        current = entry
        while True:
            parents = current.values(parent_attribute)
            if len(parents) > 1:
                raise ClassificationError(
                    f"{current.dn} specifies more than one parent: {', '.join(parents)}"
                )
            if not parents:
                return chain
            parent = parents[0]
            if parent in seen:
                raise ClassificationError(
                    f"loop in {parent_attribute}: {parent!r} appears twice "
                    f"({' -> '.join(str(name) for name in [*seen, parent])})"
                )
            seen.append(parent)
            hits = self._nodes(self.directory.search([self._node_search(parent)])[0])
            if not hits:
                raise ClassificationError(
                    f"{current.dn} names parent node {parent!r}, which has no entry"
                )
            current = hits[-1] if self.terminus else _single(hits, f"parent node {parent!r}")
            chain.append(("parent", current))

    def _merge(self, certname: str, layers: list[tuple[str, Entry]]) -> Classification:
        result = Classification(certname)
        for role, entry in layers:
            result.layers.append((role, entry.dn))
            if role == "project":
                result.project = entry
            for name in self._classes_of(entry):
                result.classes.setdefault(name, []).append(entry.dn)
            for name, value in self._parameters_of(entry, result.warnings).items():
                _keep_first(result.parameters, name, Value(value, entry.dn), result.overridden)
            if not self.terminus:
                for class_name, params in self._class_parameters_of(entry).items():
                    target = result.class_parameters.setdefault(class_name, {})
                    for key, value in params.items():
                        _keep_first(
                            target, key, Value(value, entry.dn), result.overridden,
                            label=f"{class_name}::{key}",
                        )
            branch = entry.first(ENVIRONMENT_ATTRIBUTE)
            if branch is not None and result.branch is None:
                result.branch = branch
                result.environment_origin = entry.dn
        if result.branch is None and not self.terminus:
            result.branch = DEFAULT_BRANCH
        if result.branch is not None:
            try:
                result.environment = environment_for_branch(result.branch)
            except InvalidName as error:
                raise ClassificationError(f"{result.environment_origin}: {error}") from None

        for name in sorted(RESERVED_VARIABLES & result.parameters.keys()):
            origin = result.parameters.pop(name).origin
            result.warnings.append(
                f"variable {name!r} from {origin} is reserved by Puppet and was not passed on"
            )
        for class_name in list(result.class_parameters):
            if class_name not in result.classes:
                result.unused_class_parameters[class_name] = result.class_parameters.pop(
                    class_name
                )
        return result

    def _classes_of(self, entry: Entry) -> list[str]:
        classes: list[str] = []
        for attribute in self.settings.class_attributes:
            for value in entry.values(attribute):
                # Puppet class names are lowercase and puppetClass matches
                # case-insensitively; the terminus passed them on as written.
                name = value if self.terminus else value.lower()
                if name not in classes:
                    classes.append(name)
        return classes

    def _parameters_of(self, entry: Entry, warnings: list[str]) -> dict[str, Any]:
        """An entry's own variables: attributes (per attribute_parameters), then puppetVar.

        As in the terminus, an attribute of the same name beats a puppetVar,
        and "true"/"false" become booleans.
        """
        parameters: dict[str, Any] = {}
        for name, values in self._parameter_attributes(entry, warnings):
            parameters[name] = _convert(values[0]) if len(values) == 1 else [
                _convert(value) for value in values
            ]
        stacked: dict[str, Any] = {}
        for attribute in self.settings.variable_attributes:
            for assignment in entry.values(attribute):
                key, equals, value = assignment.partition("=")
                if not equals and not self.terminus:
                    warnings.append(
                        f"{attribute} {assignment!r} on {entry.dn} has no '='; ignored"
                    )
                    continue
                stacked[key] = _convert(value) if equals else None
        for key, value in stacked.items():
            parameters.setdefault(key, value)
        return parameters

    def _parameter_attributes(
        self, entry: Entry, warnings: list[str]
    ) -> Iterable[tuple[str, list[str]]]:
        mode = self._attribute_parameters
        if mode == "none":
            return
        if mode == "all":
            allowed = None
        else:
            # As the terminus: the attributes it fetched were the listed ones
            # plus the class and parent attributes, and all became variables.
            allowed = {
                name.lower()
                for name in (*mode, *self.settings.class_attributes, self.settings.parent_attribute)
            }
        # Case-sensitive on purpose, as the terminus compared them: with its
        # setting "puppetvar", the server's "puppetVar" came through as a
        # variable of its own. Our default spells it as the server does.
        stacked = set(self.settings.variable_attributes)
        for name, values in entry.attributes.items():
            if name in stacked or name.lower() == ENVIRONMENT_ATTRIBUTE:
                continue  # environment is consumed as the node's environment
            if allowed is None or name.lower() in allowed:
                yield name, values
        for name in entry.binary:
            if allowed is None or name.lower() in allowed:
                warnings.append(f"attribute {name} of {entry.dn} is not text; not passed on")

    def _class_parameters_of(self, entry: Entry) -> dict[str, dict[str, Any]]:
        parameters: dict[str, dict[str, Any]] = {}
        for assignment in entry.values(CLASS_PARAMETER_ATTRIBUTE):
            target, equals, encoded = assignment.partition("=")
            class_name, separator, key = target.rpartition("::")
            if not (equals and separator and class_name and key):
                raise ClassificationError(
                    f"{CLASS_PARAMETER_ATTRIBUTE} {assignment!r} on {entry.dn} "
                    "is not CLASS::PARAMETER=JSON"
                )
            try:
                value = json.loads(encoded)
            except ValueError as error:
                raise ClassificationError(
                    f"{CLASS_PARAMETER_ATTRIBUTE} {target} on {entry.dn}: "
                    f"value is not JSON ({error})"
                ) from None
            parameters.setdefault(class_name, {})[key] = value
        return parameters


def _keep_first(
    target: dict[str, Value],
    name: str,
    value: Value,
    overridden: list[tuple[str, Value, str]],
    label: str | None = None,
) -> None:
    """Set ``name`` unless a more specific layer already did (and note that)."""
    winner = target.get(name)
    if winner is None:
        target[name] = value
    else:
        overridden.append((label or name, value, winner.origin))


def _single(entries: list[Entry], what: str) -> Entry:
    if len(entries) > 1:
        raise ClassificationError(
            f"{what} matches {len(entries)} entries: {'; '.join(entry.dn for entry in entries)}"
        )
    return entries[0]


def _below(dn: str, base: str) -> bool:
    """Whether ``dn`` is ``base`` or below it (compared as DNs, without case)."""
    try:
        entry, parent = ldap.dn.str2dn(dn.lower()), ldap.dn.str2dn(base.lower())
    except ldap.DECODING_ERROR:
        return False
    return len(entry) >= len(parent) and entry[len(entry) - len(parent):] == parent


def _cn_of(dn: str) -> str | None:
    """The first cn= value of a DN, as the terminus took a node's own name."""
    for rdn in dn.split(","):
        key, _, value = rdn.partition("=")
        if key.strip().lower() == "cn":
            return value.strip()
    return None


def _convert(value: str) -> Any:
    return {"true": True, "false": False}.get(value, value)
