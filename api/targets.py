"""Nodes as their agents and the ENC see them: a node's classification, and its agent's target.

The classification is exactly what ``opslab-enc`` prints (the same code, on
the reader connection, which sees what the ENC sees). The target adds what
an agent converges to beyond it: the branch's commit, a digest of the
classification, and who gets sudo.
"""

import hashlib
import json
from typing import Any

from opslab.enc.classifier import Classification, ClassificationError, Classifier, UnknownNode
from opslab.names import InvalidName, validate_certname

from . import context
from .auth import Actor, may_read_host
from .directory import is_global
from .errors import Refused
from .sudo import sudo_users


def classification(actor: Actor | None, fqdn: str) -> Classification:
    """The classification of ``fqdn``, if ``actor`` may read it.

    People may read every node's. A host token reads its own node's, and
    only while the entry that classifies it is the one the token was issued
    for: if that entry is gone and another (an entry found by the short
    name, say) would classify the name, the token learns nothing of it.
    """
    try:
        certname = validate_certname(fqdn)
    except InvalidName as error:
        raise Refused(404, f"no node {fqdn[:100]!r}: {error}") from None
    may_read_host(actor, certname)
    try:
        found = Classifier(context.reader(), context.config()).classify(certname)
    except UnknownNode:
        raise Refused(404, f"unknown node {certname}") from None
    except ClassificationError as error:
        raise Refused(409, f"cannot classify {certname}: {error}") from None
    if actor is not None and actor.kind == "host":
        own = context.directory().host_dn(certname).lower()
        role, dn = found.layers[0]
        if role != "host" or dn.lower() != own:
            raise Refused(403, f"{certname} is classified by {dn}, not by the entry this "
                               "token was issued for")
    return found


def target(node: Classification) -> dict[str, Any]:
    """The agent's target: project, branch, environment, commit, classification digest, sudo.

    Members of a project get sudo on its instances, except in a global
    project: everyone may log in to those, so membership grants no root.
    """
    project = node.project
    shared = project is not None and is_global(project.values("opslabGlobal"))
    sudo = {} if project is None or shared else sudo_users(project.values("member"))
    enc = json.dumps(node.to_enc(), sort_keys=True, separators=(",", ":"))
    return {
        "certname": node.node,
        "project": project.first("cn") if project is not None else None,
        "branch": node.branch,
        "environment": node.environment,
        "commit": context.heads().commit(node.branch)
        if node.branch else None,
        "classification": hashlib.sha256(enc.encode()).hexdigest(),
        "global": shared,
        "sudo": sorted(sudo),
        "uid_numbers": sudo,
    }


def etag(document: dict[str, Any]) -> str:
    """The ETag of a target: a digest of its canonical JSON."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]
