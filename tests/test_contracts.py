"""The documents components exchange are declared once, and what they produce matches.

The run report: ``opslab branch apply`` produces it (typed as
``opslab.branchrunner.report.RunResult``), the agent adds its own fields and
bounds it, and the API validates it against the OpenAPI document's
``RunReport``, the one declaration. A real run (real git, the real
directory, real ``puppet apply``, with a resource that fails) must give a
report the API's schema accepts.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import yaml

from opslab.agent.report import bounded
from opslab.api.contract import Contract
from opslab.branchrunner.report import RunResult, SmokeFailure, SmokeSummary
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, CONTROL_REPO, HOSTS, host_ldif
from tests.remote import Remote

NODE = "contract1.tools.example.org"


def test_the_run_result_type_declares_the_openapi_run_report() -> None:
    documented = Contract().document["components"]["schemas"]["RunReport"]
    assert set(get_type_hints(RunResult)) == set(documented["properties"])


def test_the_smoke_summary_types_declare_the_openapi_smoke_summary() -> None:
    documented = Contract().document["components"]["schemas"]["SmokeSummary"]
    failure = documented["properties"]["failures"]["items"]
    for declared, schema in ((SmokeSummary, documented), (SmokeFailure, failure)):
        assert set(get_type_hints(declared)) == set(schema["properties"])
        assert declared.__required_keys__ == set(schema["required"])


def test_a_real_run_report_is_what_the_api_takes(slapd: ThrowawaySlapd, tmp_path: Path) -> None:
    remote = Remote(tmp_path / "repository")
    shutil.copytree(CONTROL_REPO, remote.work, dirs_exist_ok=True)
    remote.commit("production", {
        "modules/failing/manifests/init.pp":
            'class failing { exec { "/bin/false": path => ["/bin", "/usr/bin"] } }\n',
    }, "a class with a resource that fails")
    slapd.add_ldif(host_ldif(NODE, "puppetClass: failing", "environment: production"))
    config = tmp_path / "opslab.yaml"
    config.write_text(yaml.safe_dump({
        "ldap": {"uri": slapd.ldapi_uri, "base": BASE},
        "cache": {"dir": str(tmp_path / "enc-cache")},
        "branches": {"remote": remote.url, "environments": str(tmp_path / "environments"),
                     "cache": str(tmp_path / "git-cache")},
        "apply": {"certname": NODE, "state_dir": str(tmp_path / "state"),
                  "puppet_state_dir": str(tmp_path / "puppet")},
    }))
    (tmp_path / "root").mkdir()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "opslab.cli", f"--config={config}", "branch", "apply",
             "--json", "--branch", "production"],
            capture_output=True, text=True, timeout=600, check=False,
            # The example classes write below this fact rather than into /etc.
            env={**os.environ, "FACTER_opslab_root": str(tmp_path / "root")})
    finally:
        connection = slapd.connect()
        connection.delete_s(f"dc={NODE},{HOSTS}")
        connection.unbind_s()
    result = json.loads(run.stdout)
    assert (run.returncode, result["status"]) == (6 if result["resources"]["changed"] else 4,
                                                  "failed"), run.stderr
    assert [item["resource"] for item in result["failed_resources"]] == ["Exec[/bin/false]"]

    contract = Contract()
    validator = contract.body_validator("/v1/hosts/<fqdn>/reports", "POST")
    sent = bounded({**result, "agent_version": "0.1.0", "trigger": "first"})
    assert contract.check(validator, sent) == sent
