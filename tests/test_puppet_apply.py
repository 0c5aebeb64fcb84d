"""A real ``puppet apply`` classified by opslab-enc from the real directory.

Puppet takes tens of seconds to start here, so one apply serves every
assertion in this module.
"""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from opslab.puppet import apply_command, enc_command
from opslab.slapd import ThrowawaySlapd
from tests.conftest import CONTROL_REPO, host_ldif, write_config

NODE = "apply1.tools.example.org"


@dataclass
class Applied:
    result: subprocess.CompletedProcess[str]
    root: Path


@pytest.fixture(scope="module")
def applied(slapd: ThrowawaySlapd, tmp_path_factory: pytest.TempPathFactory) -> Applied:
    work = tmp_path_factory.mktemp("apply")
    slapd.add_ldif(host_ldif(
        NODE, "puppetClass: role::web", "puppetVar: site_name=apply.example.org",
        "puppetVar: cluster=esams", 'opslabClassParameter: motd::message="from the directory"',
    ))
    config = write_config(work / "opslab.yaml", slapd)
    # The tools project follows branch feature/Tools-MOTD: only an environment
    # of the mapped name exists, so the run proves the ENC chose it.
    environments = work / "environments"
    shutil.copytree(CONTROL_REPO, environments / "feature_tools_motd")
    root = work / "root"
    root.mkdir()
    command = apply_command(
        manifest=environments / "feature_tools_motd" / "manifests" / "site.pp",
        certname=NODE,
        environmentpath=environments,
        enc=enc_command(str(config)),
        state_dir=work / "puppet",
    )
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "FACTER_opslab_root": str(root)},
    )
    return Applied(result, root)


def test_apply_succeeds_with_changes(applied: Applied) -> None:
    assert applied.result.returncode == 2, applied.result.stdout + applied.result.stderr


def test_classes_from_every_layer_took_effect(applied: Applied) -> None:
    assert (applied.root / "base.conf").exists()  # default entry's class
    assert (applied.root / "motd").exists()  # project's class
    assert (applied.root / "site").exists()  # host's class


def test_parameters_and_environment_took_effect(applied: Applied) -> None:
    assert (applied.root / "base.conf").read_text() == (
        "environment=feature_tools_motd\n"
        "ntp_server=ntp.example.org\n"
        "cluster=esams\n"
        "monitored=true\n"
    )
    assert (applied.root / "site").read_text() == "apply.example.org in esams\n"


def test_class_parameter_from_host_beats_project(applied: Applied) -> None:
    assert (applied.root / "motd").read_text() == "from the directory\n"
