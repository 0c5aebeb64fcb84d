"""The user-data: opslab's template filled in, and the site's cloud-config merged into it
(instances.cloud_config_file): the merge's rules, its refusals, and cloud-init's own
schema check of the result."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from opslab.instances.userdata import HEADER, Settings, merged, render

TOKEN = "tok-3f9a1c2b7e6d5a4f"
SETTINGS = Settings(
    bootstrap_url="https://opslab.example.org/bootstrap.sh", package="opslab==0.1",
    api_url="https://api.example.org", ldap_uri="ldaps://ldap.example.org",
    ldap_base="dc=example,dc=org", remote="https://git.example.org/puppet.git",
    certname="app1.web.example.org", host_token=TOKEN)
PIP_CONF = "[global]\nindex-url = https://pypi.example.org/simple\n"
APT_PROXY = "http://apt-cache.example.org:3142"


CLOUD_INIT = shutil.which("cloud-init")


def proxy_ca_and_pip(ca: str) -> dict[str, Any]:
    """What local instances need, as a real site's file has it: the apt proxy, the CA, pip's
    index (and a package of its own)."""
    return {"apt": {"proxy": APT_PROXY}, "ca_certs": {"trusted": [ca]},
            "write_files": [{"path": "/etc/pip.conf", "content": PIP_CONF,
                             "permissions": "0644"}],
            "packages": ["python3-venv"]}


def site_file(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "site-cloud-config.yaml"
    path.write_text("#cloud-config\n" + yaml.safe_dump(document, sort_keys=False))
    return str(path)


def refusal(cloud_config_file: str) -> str:
    with pytest.raises(ValueError, match="the site's cloud-config") as error:
        render(SETTINGS, cloud_config_file)
    assert TOKEN not in str(error.value)
    return str(error.value)


@pytest.fixture(scope="module")
def site_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real CA certificate (PEM), as a site's ca_certs holds one."""
    work = tmp_path_factory.mktemp("ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=Site CA",
                    "-days", "1", "-keyout", str(work / "ca.key"), "-out", str(work / "ca.pem")],
                   check=True, capture_output=True)
    return (work / "ca.pem").read_text()


def test_lists_are_concatenated_with_the_sites_entries_first() -> None:
    template = {"packages": ["curl"], "runcmd": [["sh", "-c", "bootstrap"]]}
    site = {"packages": ["vim"], "runcmd": ["echo site"], "bootcmd": ["echo early"]}
    assert merged(site, template) == {"packages": ["vim", "curl"],
                                      "runcmd": ["echo site", ["sh", "-c", "bootstrap"]],
                                      "bootcmd": ["echo early"]}


def test_mappings_are_merged_key_by_key_by_the_same_rules() -> None:
    template = {"apt": {"sources": {"opslab": {"source": "deb x"}}, "conf": "A"}}
    site = {"apt": {"proxy": APT_PROXY, "sources": {"site": {"source": "deb y"}}},
            "users": ["default", {"name": "ops"}]}
    assert merged(site, template) == {
        "apt": {"sources": {"opslab": {"source": "deb x"}, "site": {"source": "deb y"}},
                "conf": "A", "proxy": APT_PROXY},
        "users": ["default", {"name": "ops"}]}


@pytest.mark.parametrize(("site", "template", "key", "why"), [
    ({"apt": {"proxy": "b"}}, {"apt": {"proxy": "a"}}, "apt.proxy", "set by opslab's template"),
    ({"apt": {"proxy": "a"}}, {"apt": {"proxy": "a"}}, "apt.proxy", "set by opslab's template"),
    ({"packages": {"vim": 1}}, {"packages": ["curl"]}, "packages",
     "a mapping in the site's file but a list in opslab's template"),
    ({"apt": ["x"]}, {"apt": {"proxy": "a"}}, "apt", "a list in the site's file but a mapping"),
    ({"packages": None}, {"packages": ["curl"]}, "packages", "null in the site's file but a list"),
])
def test_a_scalar_both_set_or_a_clash_of_types_is_refused_naming_the_key(
    site: dict[str, Any], template: dict[str, Any], key: str, why: str
) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(f"{key} is {why}")):
        merged(site, template)


def test_a_site_file_never_replaces_a_file_of_the_template(tmp_path: Path) -> None:
    path = site_file(tmp_path, {"write_files": [
        {"path": "/etc/pip.conf", "content": PIP_CONF},
        {"path": "/etc//opslab/host-token", "content": "stolen\n", "defer": True}]})
    assert refusal(path) == (f"the site's cloud-config {path}: write_files[1] writes "
                             "/etc/opslab/host-token, a file of opslab's template")


@pytest.mark.parametrize(("text", "complaint"), [
    ("- apt\n- ca_certs\n", "must be a mapping of cloud-config keys, not a list"),
    ("just words\n", "must be a mapping of cloud-config keys, not a scalar"),
    ("apt:\n  proxy: http://user:s3cret@proxy:3142\n  bad: [\n",
     "is not valid YAML: while parsing a flow node, expected the node content, but found "
     "'<stream end>' (line 4, column 1)"),
    ("apt: {proxy: http://user:s3cret@proxy:3142}\n\tpackages: []\n",
     "is not valid YAML: while scanning for the next token, found character '\\t' that "
     "cannot start any token (line 2, column 1)"),
    ("apt: {proxy: 'a'}\n---\npackages: []\n", "is not valid YAML: expected a single "
     "document in the stream, but found another document (line 2, column 1)"),
])
def test_a_site_file_that_is_no_cloud_config_mapping_is_refused_without_its_text(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    message = refusal(str(path))
    assert message == f"the site's cloud-config {path}: {complaint}"
    assert "s3cret" not in message


def test_a_site_file_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    assert refusal(str(tmp_path / "missing.yaml")).endswith(
        "missing.yaml: cannot be read: No such file or directory")
    assert refusal(str(tmp_path)).endswith(": cannot be read: Is a directory")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"apt: {proxy: caf\xe9}\n")
    assert refusal(str(latin)).endswith("latin.yaml: is not UTF-8 text")


def test_an_empty_site_file_adds_nothing_and_placeholders_in_it_stay_as_they_are(
    tmp_path: Path
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("#cloud-config\n")
    assert render(SETTINGS, str(empty)) == render(SETTINGS)
    literal = site_file(tmp_path, {"bootcmd": ["echo @HOST_TOKEN@"]})
    assert yaml.safe_load(render(SETTINGS, literal))["bootcmd"] == ["echo @HOST_TOKEN@"]


def test_the_sites_proxy_ca_and_pip_conf_come_first_in_one_cloud_config(
    tmp_path: Path, site_ca: str
) -> None:
    path = site_file(tmp_path, proxy_ca_and_pip(site_ca))
    text = render(SETTINGS._replace(bootstrap_options=("--ldap-starttls",)), path)
    assert text.startswith(HEADER)
    document = yaml.safe_load(text)
    assert document["apt"] == {"proxy": APT_PROXY}
    assert document["ca_certs"] == {"trusted": [site_ca]}
    assert [entry["path"] for entry in document["write_files"]] == [
        "/etc/pip.conf", "/etc/opslab/host-token"]
    assert document["write_files"][0]["content"] == PIP_CONF
    assert document["write_files"][1]["content"] == f"{TOKEN}\n"
    assert document["packages"] == ["python3-venv"]  # the template asks apt for none
    [bootstrap] = document["runcmd"]
    assert bootstrap[-1] == "--ldap-starttls"
    assert text.count(TOKEN) == 1


@pytest.mark.skipif(CLOUD_INIT is None, reason="needs cloud-init (Debian's package)")
def test_cloud_inits_own_schema_check_accepts_the_merged_user_data(
    tmp_path: Path, site_ca: str
) -> None:
    checked = schema_check(tmp_path, render(SETTINGS, site_file(tmp_path,
                                                                proxy_ca_and_pip(site_ca))))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Valid cloud-config" in checked.stdout
    # The check is a real one: a proxy that is not a string is refused.
    wrong = schema_check(tmp_path, render(SETTINGS, site_file(tmp_path, {"apt": {"proxy": 3142}})))
    assert wrong.returncode != 0
    assert "apt.proxy: 3142 is not of type 'string'" in wrong.stdout + wrong.stderr


def schema_check(tmp_path: Path, user_data: str) -> subprocess.CompletedProcess[str]:
    rendered = tmp_path / "user-data"
    rendered.write_text(user_data)
    return subprocess.run([str(CLOUD_INIT), "schema", "--config-file", str(rendered)],
                          capture_output=True, text=True, check=False)
