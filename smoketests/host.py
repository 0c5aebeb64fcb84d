"""What a host applied, which its checks are about.

* **Classes and their parameters**: from the catalog Puppet applied last
  (``opslab branch apply`` has Puppet keep it, ``STATE_DIR/client_data/
  catalog/CERTNAME.json``), so the classes a role includes are checked too
  and a parameter nobody set has the default Puppet used. Without a
  catalog (before the first run; an outside observer), from the
  classification.
* **Variables**: the classification's parameters (the ENC's, as Puppet
  gets them).
* **The tree**: the control repository at the commit that was applied
  (``last_apply.json``), whose ``modules/*/checks.yaml`` say what to check.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opslab.config import Config
from opslab.names import InvalidName, validate_class_name


class HostError(Exception):
    """What the host applied cannot be known (no classification, no tree)."""


@dataclass
class Applied:
    """A host's classes with their parameters, its variables, and the tree they came from."""

    classes: dict[str, dict[str, Any]]
    variables: dict[str, Any]
    tree: str | None = None
    commit: str | None = None
    certname: str | None = None
    # Per class, the parameters Puppet marks Sensitive (never used by a check).
    sensitive: dict[str, frozenset[str]] = field(default_factory=dict)


def from_classification(document: Mapping[str, Any]) -> Applied:
    """Classes and variables of an ENC document (``classes`` a list or a mapping)."""
    if not isinstance(document, Mapping):
        raise HostError("the classification is not a mapping")
    listed = document.get("classes") or {}
    if isinstance(listed, list):
        listed = dict.fromkeys(listed)
    if not isinstance(listed, Mapping):
        raise HostError("the classification's classes are neither a list nor a mapping")
    variables = document.get("parameters") or {}
    classes = {str(name): dict(params) if isinstance(params, Mapping) else {}
               for name, params in listed.items()}
    return Applied(classes, dict(variables) if isinstance(variables, Mapping) else {})


def with_catalog(applied: Applied, path: str) -> Applied:
    """``applied`` with the classes and parameters of the catalog at ``path``, if there is one."""
    try:
        with open(path, encoding="utf-8") as stream:
            catalog = json.load(stream)
    except FileNotFoundError:
        return applied
    except (OSError, ValueError, RecursionError) as error:  # a parameter nested too deep
        raise HostError(f"the catalog {path} cannot be read: {error}") from None
    classes: dict[str, dict[str, Any]] = {}
    sensitive: dict[str, frozenset[str]] = {}
    for resource in catalog.get("resources") or [] if isinstance(catalog, dict) else []:
        if not isinstance(resource, dict) or resource.get("type") != "Class":
            continue
        name = str(resource.get("title", "")).lower()
        try:
            validate_class_name(name)
        except InvalidName:  # Settings and main are Puppet's own, and not names of ours
            continue
        if name in ("settings", "main"):
            continue
        classes[name] = dict(resource.get("parameters") or {})
        sensitive[name] = frozenset(resource.get("sensitive_parameters") or ())
    applied.classes = classes
    applied.sensitive = sensitive
    return applied


def classify(enc: list[str], certname: str) -> Applied:
    """Ask the ENC (``opslab-enc``, as Puppet does) for ``certname``'s classification."""
    from opslab.puppet import ClassificationError, classification

    try:
        return from_classification(classification(enc, certname))
    except ClassificationError as error:
        raise HostError(str(error)) from None
    except RecursionError:  # parameters nested too deep for the YAML reader
        raise HostError("the ENC printed a classification nested too deep to read") from None


def last_applied(config: Config) -> tuple[str, str]:
    """The environment and commit of this host's last ``opslab branch apply``."""
    path = os.path.join(config.apply.state_dir, "last_apply.json")
    try:
        with open(path, encoding="utf-8") as stream:
            last = json.load(stream)
    except FileNotFoundError:
        raise HostError(f"nothing was applied here yet ({path} does not exist)") from None
    except (OSError, ValueError) as error:
        raise HostError(f"{path} cannot be read: {error}") from None
    environment, commit = last.get("environment"), last.get("commit")
    if not environment or not commit:
        raise HostError(f"the last apply ({path}) had no environment and commit")
    return str(environment), str(commit)


def tree_of(config: Config, environment: str, commit: str) -> str:
    """The deployed tree of ``commit`` in ``environment``."""
    from opslab.branchrunner.environments import EnvironmentsDirectory

    branches = config.branches
    directory = EnvironmentsDirectory(branches.environments, branches.keep_previous,
                                      branches.keep_seconds)
    tree = str(directory.tree_path(environment, commit))
    if not os.path.isdir(tree):
        raise HostError(f"the tree of commit {commit} is no longer deployed ({tree})")
    return tree


def this_host(config: Config, certname: str) -> Applied:
    """What this host applied last: the tree of its last apply, the catalog Puppet kept,
    and the ENC's classification (as Puppet asks it: the variables are its parameters)."""
    from opslab.puppet import enc_command, kept_catalog

    environment, commit = last_applied(config)
    enc = config.apply.enc.split() if config.apply.enc else enc_command(
        None if config.source == "embedded defaults" else config.source)
    applied = with_catalog(classify(enc, certname), kept_catalog(config.apply.state_dir, certname))
    applied.tree, applied.commit, applied.certname = (tree_of(config, environment, commit),
                                                      commit, certname)
    return applied
