"""How opslab invokes ``puppet apply``: masterless, classified by ``opslab-enc``.

The ENC is wired in with ``node_terminus=exec``; Puppet splits
``external_nodes`` on whitespace and appends the certname, so the ENC's
command line (with its ``--config``) goes in as is.
"""

import shlex
from collections.abc import Sequence
from pathlib import Path

# --detailed-exitcodes: what each status of ``puppet apply`` means.
EXIT_MEANINGS = {
    0: "no changes",
    1: "run failed",
    2: "changes applied",
    4: "failures",
    6: "changes and failures",
}


def apply_command(
    *,
    manifest: Path,
    certname: str,
    environmentpath: Path,
    enc: Sequence[str],
    state_dir: Path | None = None,
) -> list[str]:
    """The argv of ``puppet apply`` for ``certname``, classified by ``enc``.

    ``state_dir`` keeps all of Puppet's own files (conf, var, logs) there
    instead of the system's, for unprivileged or throwaway runs.
    """
    if any(any(char.isspace() for char in part) for part in enc):
        raise ValueError(f"Puppet splits external_nodes on whitespace: {shlex.join(enc)}")
    command = ["puppet", "apply", "--detailed-exitcodes", "--color=false",
               f"--certname={certname}", f"--environmentpath={environmentpath}",
               "--node_terminus=exec", f"--external_nodes={' '.join(enc)}"]
    if state_dir is not None:
        command += [f"--{setting}={state_dir / setting}"
                    for setting in ("confdir", "vardir", "codedir", "logdir", "rundir")]
    return [*command, str(manifest)]
