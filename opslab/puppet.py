"""How opslab invokes ``puppet apply``: masterless, classified by ``opslab-enc``.

The ENC is wired in with ``node_terminus=exec``; Puppet splits
``external_nodes`` on whitespace and appends the certname, so the ENC's
command line (with its ``--config``) goes in as is.
"""

import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opslab import process

# --detailed-exitcodes: what each status of ``puppet apply`` means.
EXIT_MEANINGS = {
    0: "no changes",
    1: "run failed",
    2: "changes applied",
    4: "failures",
    6: "changes and failures",
}
SUCCESS_CODES = frozenset({0, 2})
# What the ENC may take to answer (it may wait on the directory, or the API).
ENC_TIMEOUT = 120.0
# Below apply.state_dir: Puppet's client data, where it keeps the catalog it applied.
CLIENT_DATA = "client_data"


def kept_catalog(state_dir: str, certname: str) -> str:
    """Where the catalog ``certname`` applied last is kept (``apply_command``'s
    ``client_data_dir`` being ``STATE_DIR/CLIENT_DATA``)."""
    return f"{state_dir}/{CLIENT_DATA}/catalog/{certname}.json"


def enc_command(config_path: str | None) -> list[str]:
    """The installed ``opslab-enc``, with ``--config`` when one was given."""
    script = Path(sys.executable).with_name("opslab-enc")
    if script.exists():
        command = [str(script)]
    elif found := shutil.which("opslab-enc"):
        command = [found]
    else:
        command = [sys.executable, "-m", "opslab.enc"]
    return [*command, f"--config={config_path}"] if config_path else command


class ClassificationError(Exception):
    """The ENC did not classify the node: it could not run, refused, or printed nonsense."""


def classification(enc: Sequence[str], certname: str) -> dict[str, Any]:
    """What ``enc`` prints for ``certname``, parsed: the classification Puppet gets."""
    import yaml

    try:
        done = process.run([*enc, certname], ENC_TIMEOUT, text=True)
    except (OSError, process.TimedOut) as error:
        raise ClassificationError(f"the ENC could not run: {error}") from None
    if done.returncode != 0:
        raise ClassificationError(f"the ENC refused {certname} (exit {done.returncode}): "
                                  f"{done.stderr.strip()[-1000:]}")
    try:
        document = yaml.safe_load(done.stdout)
    except yaml.YAMLError:
        document = None
    if not isinstance(document, dict):
        raise ClassificationError("the ENC printed something that is not a classification")
    return document


def apply_command(
    *,
    manifest: Path | None,
    certname: str,
    environmentpath: Path,
    enc: Sequence[str],
    environment: str | None = None,
    state_dir: Path | None = None,
    report_dir: Path | None = None,
    client_data_dir: Path | None = None,
    puppet: str = "puppet",
) -> list[str]:
    """The argv of ``puppet apply`` for ``certname``, classified by ``enc``.

    ``state_dir`` keeps all of Puppet's own files (conf, var, logs) there
    instead of the system's, for unprivileged or throwaway runs;
    ``report_dir`` receives this run's last_run_summary.yaml and
    last_run_report.yaml, so that no earlier run's can be mistaken for it.
    ``client_data_dir`` keeps the catalog Puppet applied, as JSON
    (``catalog/CERTNAME.json``): the smoke tests read the classes and their
    parameters from it, a role's included classes and defaults among them.
    Without a manifest, the environment's own (``manifests/``) applies.
    """
    if any(any(char.isspace() for char in part) for part in enc):
        raise ValueError(f"Puppet splits external_nodes on whitespace: {shlex.join(enc)}")
    command = [puppet, "apply", "--detailed-exitcodes", "--color=false",
               f"--certname={certname}", f"--environmentpath={environmentpath}",
               "--node_terminus=exec", f"--external_nodes={' '.join(enc)}"]
    if environment is not None:
        command.append(f"--environment={environment}")
    if state_dir is not None:
        command += [f"--{setting}={state_dir / setting}"
                    for setting in ("confdir", "vardir", "codedir", "logdir", "rundir")]
    if report_dir is not None:
        command += [f"--lastrunfile={report_dir / 'last_run_summary.yaml'}",
                    f"--lastrunreport={report_dir / 'last_run_report.yaml'}"]
    if client_data_dir is not None:
        command += ["--catalog_cache_terminus=json", f"--client_datadir={client_data_dir}"]
    if manifest is None:
        return [*command, "--execute="]
    return [*command, str(manifest)]
