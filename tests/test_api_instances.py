"""Hosts with instances: the API launches through openstacksdk against the OpenStack
stand-in, names the instance in the directory (addresses, the id's alias), documents it,
enforces quotas, and leaves nothing behind when a launch fails or a host is deleted."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from opslab.api import context, reaper
from opslab.api.store import Instance
from opslab.slapd import ThrowawaySlapd
from tests.cloud_api import DNS, HOSTS, Cloud, cloud, entry
from tests.conftest import basic
from tests.openstack_standin import IMAGE_ID, Fate, image

__all__ = ["cloud"]  # the fixture, imported for pytest
DEFAULTS = "/v1/projects/web/instance-defaults"


def log_lines(client: FlaskClient) -> list[str]:
    return [item["message"] for item in client.get("/v1/projects/web/log").json]


def actions(client: FlaskClient, target: str) -> list[str]:
    return [change["action"] for change in
            client.get(f"/v1/changes?target={target}", headers=basic("olga")).json][::-1]


def test_a_member_launches_an_instance_that_is_named_and_documented(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    answer = cloud.create("app1")
    assert answer.status_code == 201, answer.json
    host, token = answer.json["host"], answer.json["token"]
    instance = host["instance"]
    assert (instance["state"], instance["image"], instance["flavor"]) == (
        "active", "debian-12", "m1.small")
    assert (instance["cores"], instance["ram_mb"]) == (1, 2048)
    assert instance["addresses"]

    # The cloud got the host's user-data: its certname and its token, once.
    [created] = cloud.created
    assert created.name == "app1.web.example.org"
    assert created.metadata == {"opslab-installation": "opslab", "opslab-project": "web",
                                "opslab-host": "app1.web.example.org"}
    user_data = yaml.safe_load(created.user_data or "")
    assert token in user_data["write_files"][0]["content"]
    assert "app1.web.example.org" in user_data["runcmd"][0]

    # DNS: the entry's addresses (A and PTR), and the alias of its id (CNAME).
    stored = entry(slapd, f"dc=app1.web.example.org,{HOSTS}")
    assert stored is not None
    assert [value.decode() for value in stored["aRecord"]] == instance["addresses"]
    alias = f"i-{created.id.replace('-', '')[:8]}.web.example.org"
    assert entry(slapd, f"dc={alias},{DNS}") == {
        "objectClass": [b"dNSDomain", b"domainRelatedObject"], "dc": [alias.encode()],
        "associatedDomain": [alias.encode()], "cNAMERecord": [b"app1.web.example.org"]}

    # It documents itself: the audit log, the Server Admin Log, the host view.
    assert actions(cloud.client, "app1.web.example.org") == ["host.create", "instance.launch"]
    assert any(line.startswith(f"launched app1.web.example.org ({created.id}")
               for line in log_lines(cloud.client))
    view = cloud.client.get("/v1/hosts/app1.web.example.org", headers=basic("dave")).json
    assert view["instance"] == instance

    # Deleting the host deletes the instance first, then the names.
    assert cloud.client.delete("/v1/hosts/app1.web.example.org",
                               headers=basic("carol")).status_code == 204
    assert cloud.standin.status(created.id) is None
    assert entry(slapd, f"dc={alias},{DNS}") is None
    assert entry(slapd, f"dc=app1.web.example.org,{HOSTS}") is None
    assert actions(cloud.client, "app1.web.example.org")[-2:] == ["instance.delete",
                                                                  "host.delete"]
    assert log_lines(cloud.client)[0] == f"deleted the instance of app1.web.example.org " \
                                         f"({created.id})"


@pytest.mark.parametrize(("fate", "status", "complaint"), [
    (Fate.error("No valid host was found."), 502, "No valid host was found."),
    (Fate.stuck(), 503, "is still building after 4 seconds"),
])
def test_a_launch_that_fails_leaves_nothing_behind(
    cloud: Cloud, slapd: ThrowawaySlapd, fate: Fate, status: int, complaint: str
) -> None:
    cloud.standin.on_create = lambda created: (cloud.created.append(created), fate)[1]
    answer = cloud.create("broken")
    assert answer.status_code == status, answer.json
    assert complaint in answer.json["error"]
    [created] = cloud.created
    assert cloud.standin.status(created.id) is None  # the server was deleted, and is gone
    assert entry(slapd, f"dc=broken.web.example.org,{HOSTS}") is None
    assert cloud.client.get("/v1/hosts/broken.web.example.org",
                            headers=basic("carol")).status_code == 404
    assert cloud.client.get("/v1/projects/web/quota",
                            headers=basic("carol")).json["used"]["instances"] == 0
    assert actions(cloud.client, "broken.web.example.org") == ["host.create", "host.delete"]
    # The name is free again: nothing of the failed launch is in its way.
    cloud.standin.on_create = lambda created: Fate.active()
    again = cloud.create("broken")
    assert again.status_code == 201, again.json
    assert cloud.client.delete("/v1/hosts/broken.web.example.org",
                               headers=basic("carol")).status_code == 204


def test_quotas_are_set_by_operations_and_refuse_with_a_clear_message(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    limits = {"instances": 1, "cores": None, "ram_mb": None}
    assert cloud.client.put("/v1/projects/web/quota", json=limits,
                            headers=basic("carol")).status_code == 403
    set_ = cloud.client.put("/v1/projects/web/quota", json=limits, headers=basic("olga"))
    assert set_.status_code == 200, set_.json
    try:
        assert cloud.create("first").status_code == 201
        refused = cloud.create("second")
        assert refused.status_code == 403
        assert "would be over its quota with this instance (instances: 2 of 1)" in \
            refused.json["error"]
        assert len(cloud.created) == 1  # the cloud was never asked
        assert entry(slapd, f"dc=second.web.example.org,{HOSTS}") is None
        assert cloud.client.get("/v1/projects/web/quota", headers=basic("dave")).json == {
            **limits, "used": {"instances": 1, "cores": 1, "ram_mb": 2048}}
    finally:
        cloud.client.delete("/v1/hosts/first.web.example.org", headers=basic("carol"))
        cloud.client.put("/v1/projects/web/quota",
                         json={"instances": None, "cores": None, "ram_mb": None},
                         headers=basic("olga"))


def test_the_clouds_own_refusal_is_passed_on_and_nothing_is_left(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    cloud.standin.max_instances = 0
    answer = cloud.create("refused")
    assert answer.status_code == 502, answer.json
    assert "Quota exceeded for instances" in answer.json["error"]
    assert cloud.standin.password not in answer.json["error"]
    assert entry(slapd, f"dc=refused.web.example.org,{HOSTS}") is None


def test_a_host_whose_cloud_cannot_be_reached_is_not_deleted(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    assert cloud.create("kept").status_code == 201
    [created] = cloud.created
    cloud.standin.hang(10, lambda method, path: method == "DELETE")
    answer = cloud.client.delete("/v1/hosts/kept.web.example.org", headers=basic("carol"))
    assert answer.status_code == 503, answer.json
    assert entry(slapd, f"dc=kept.web.example.org,{HOSTS}") is not None
    assert cloud.client.get("/v1/hosts/kept.web.example.org",
                            headers=basic("carol")).json["instance"]["state"] == "active"
    cloud.standin.hangs.clear()
    assert cloud.client.delete("/v1/hosts/kept.web.example.org",
                               headers=basic("carol")).status_code == 204
    assert cloud.standin.status(created.id) is None


def test_an_unknown_flavor_is_refused_before_the_cloud_is_asked(
    cloud: Cloud
) -> None:
    answer = cloud.create("nosize", flavor="m1.huge")
    assert answer.status_code == 422
    assert "instance.flavor" in answer.json["error"]
    assert cloud.created == []


def default_changes(client: FlaskClient) -> list[dict[str, Any]]:
    """The audit records of the project web's instance defaults, oldest first."""
    return client.get("/v1/changes?action=project.instance_defaults&project=web",
                      headers=basic("dave")).json[::-1]


def test_a_projects_defaults_are_taken_when_the_request_names_none(cloud: Cloud) -> None:
    cloud.standin.images.append(image("33333333-3333-4333-8333-333333333333", "debian-13"))
    # Until a member sets them there are none, and every person reads that.
    assert cloud.client.get(DEFAULTS, headers=basic("dave")).json == {"image": None,
                                                                      "flavor": None}
    own = {"image": "debian-13", "flavor": "m1.large"}
    set_ = cloud.client.put(DEFAULTS, json=own, headers=basic("carol"))
    assert (set_.status_code, set_.json) == (200, own)
    assert cloud.client.get(DEFAULTS, headers=basic("dave")).json == own

    # (image, flavor) each launch asks for -> what it gets: the request's, else the
    # project's, else the configuration's (debian-12, m1.small).
    launches = [("defaults", {}, ("debian-13", "m1.large")),
                ("asked", {"image": "debian-12", "flavor": "m1.small"},
                 ("debian-12", "m1.small")),
                ("half", {"flavor": "m1.small"}, ("debian-13", "m1.small"))]
    for label, asked, used in launches:
        answer = cloud.create(label, **asked)
        assert answer.status_code == 201, answer.json
        instance = answer.json["host"]["instance"]
        assert (instance["image"], instance["flavor"]) == used
        host = f"{label}.web.example.org"
        # The host view and the launch's audit record say what was used.
        assert cloud.client.get(f"/v1/hosts/{host}",
                                headers=basic("dave")).json["instance"] == instance
        [launched] = cloud.client.get(f"/v1/changes?action=instance.launch&target={host}",
                                      headers=basic("dave")).json
        assert (launched["after"]["image"], launched["after"]["flavor"]) == used
    # The cloud was asked for exactly those.
    assert [(created.image_id, created.flavor_id) for created in cloud.created] == [
        ("33333333-3333-4333-8333-333333333333", "f2"), (IMAGE_ID, "f1"),
        ("33333333-3333-4333-8333-333333333333", "f1")]

    # Without the project's defaults, the configuration's.
    cleared = {"image": None, "flavor": None}
    assert cloud.client.put(DEFAULTS, json=cleared, headers=basic("olga")).json == cleared
    plain = cloud.create("plain")
    assert plain.status_code == 201, plain.json
    assert (plain.json["host"]["instance"]["image"],
            plain.json["host"]["instance"]["flavor"]) == ("debian-12", "m1.small")

    # Every change is in the audit log, with who made it, before and after.
    assert [(change["actor"], change["target"], change["before"], change["after"],
             change["state"]) for change in default_changes(cloud.client)] == [
        ("person:carol", "web", cleared, own, "done"),
        ("person:olga", "web", own, cleared, "done")]
    for label in ("defaults", "asked", "half", "plain"):
        assert cloud.client.delete(f"/v1/hosts/{label}.web.example.org",
                                   headers=basic("carol")).status_code == 204


def test_with_no_image_anywhere_the_refusal_names_all_three_places(
    cloud: Cloud, slapd: ThrowawaySlapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = cloud.client.application
    config = app.config["OPSLAB"]
    monkeypatch.setitem(app.config, "OPSLAB", config._replace(
        instances=config.instances._replace(image=None)))
    answer = cloud.create("imageless")
    assert answer.status_code == 422, answer.json
    assert answer.json["error"] == (
        "instance.image: none given, project 'web' has no default image "
        "(PUT /v1/projects/web/instance-defaults), and instances.image is not set")
    assert_nothing_left(cloud, slapd, "imageless.web.example.org")
    # The project's default stands in for the configuration's.
    assert cloud.client.put(DEFAULTS, json={"image": "debian-12", "flavor": None},
                            headers=basic("carol")).status_code == 200
    again = cloud.create("imageless")
    assert again.status_code == 201, again.json
    assert again.json["host"]["instance"]["image"] == "debian-12"
    assert cloud.client.delete("/v1/hosts/imageless.web.example.org",
                               headers=basic("carol")).status_code == 204


def test_only_those_who_may_change_the_project_set_its_defaults(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    wanted = {"image": "debian-12", "flavor": "m1.large"}
    refused = cloud.client.put(DEFAULTS, json=wanted, headers=basic("dave"))
    assert refused.status_code == 403
    assert refused.json["error"] == "dave is not a member of project 'web'"
    assert cloud.client.put(DEFAULTS, json=wanted).status_code == 401
    assert cloud.client.get(DEFAULTS).status_code == 401
    assert cloud.client.put("/v1/projects/nosuch/instance-defaults", json=wanted,
                            headers=basic("olga")).status_code == 404
    assert cloud.client.get("/v1/projects/nosuch/instance-defaults",
                            headers=basic("dave")).status_code == 404
    assert cloud.client.get(DEFAULTS, headers=basic("carol")).json == {"image": None,
                                                                       "flavor": None}
    assert default_changes(cloud.client) == []
    # A global project: operations only, its members no more.
    assert cloud.client.patch("/v1/projects/web", json={"global": True},
                              headers=basic("olga")).status_code == 200
    try:
        refused = cloud.client.put(DEFAULTS, json=wanted, headers=basic("carol"))
        assert refused.status_code == 403
        assert refused.json["error"] == "project 'web' is global: only operations may change it"
        assert cloud.client.put(DEFAULTS, json=wanted, headers=basic("olga")).json == wanted
    finally:
        assert cloud.client.patch("/v1/projects/web", json={"global": False},
                                  headers=basic("olga")).status_code == 200
    assert [change["actor"] for change in default_changes(cloud.client)] == ["person:olga"]


@pytest.mark.parametrize(("body", "complaint"), [
    ({"image": "debian\n12", "flavor": None},
     "image: 'debian\\n12' must be one line of 1 to 255 characters, without control "
     "characters"),
    ({"image": None, "flavor": "m1\x85small"},
     "flavor: 'm1\\x85small' must be one line of 1 to 255 characters, without control "
     "characters"),
    ({"image": "d" * 256, "flavor": None},
     "image: '" + "d" * 76 + "... must be one line of 1 to 255 characters"),
    ({"image": "", "flavor": None}, "image: '' must be one line of 1 to 255 characters"),
    ({"image": 12, "flavor": None}, "image must be of type string or null"),
    ({"image": ["debian-12"], "flavor": None}, "image must be of type string or null"),
    ({"image": "debian-12"}, "'flavor' is required"),
    ({"image": None, "flavor": None, "network": "x"},
     "unknown fields: network (allowed: image, flavor)"),
    (["debian-12", "m1.small"], "the body must be a JSON object"),
])
def test_bad_defaults_are_refused_and_change_nothing(
    cloud: Cloud, body: Any, complaint: str
) -> None:
    before = {"image": "debian-12", "flavor": "m1.small"}
    assert cloud.client.put(DEFAULTS, json=before, headers=basic("carol")).status_code == 200
    refused = cloud.client.put(DEFAULTS, json=body, headers=basic("carol"))
    assert refused.status_code == 422
    assert refused.json["error"].startswith(complaint), refused.json
    assert cloud.client.get(DEFAULTS, headers=basic("carol")).json == before
    assert len(default_changes(cloud.client)) == 1


def test_a_default_flavor_the_cloud_lacks_refuses_the_launch_and_leaves_nothing(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    # Not checked when set (a cloud's flavors come and go): at the launch, by the cloud.
    assert cloud.client.put(DEFAULTS, json={"image": None, "flavor": "m1.huge"},
                            headers=basic("carol")).status_code == 200
    answer = cloud.create("unsized")
    assert answer.status_code == 422, answer.json
    assert answer.json["error"] == ("instance.flavor: flavor m1.huge: no flavor 'm1.huge' "
                                    "(project web's default flavor)")
    assert_nothing_left(cloud, slapd, "unsized.web.example.org")


def reap(cloud: Cloud, at: datetime | None = None) -> Any:
    app = cloud.client.application
    with app.app_context():
        app.extensions["opslab.directory"].begin_request()
        return reaper.reap(at)


def tags(host: str, installation: str = "opslab") -> dict[str, str]:
    return {"opslab-installation": installation, "opslab-project": "web", "opslab-host": host}


def test_the_reaper_deletes_a_server_no_host_claims_once_it_has_seen_it_twice(
    cloud: Cloud
) -> None:
    assert cloud.create("claimed").status_code == 201
    [claimed] = cloud.created
    stray = cloud.standin.add_server("stray.web.example.org", tags("stray.web.example.org"))
    others = cloud.standin.add_server("x.web.example.org", tags("x.web.example.org", "other"))
    try:
        first = reap(cloud)
        assert (first.watching, first.deleted) == ([stray], [])
        assert cloud.standin.status(stray) == "ACTIVE"
        second = reap(cloud)
        assert (second.watching, second.deleted) == ([], [stray])
        assert cloud.standin.status(stray) is None
        # Another installation's server and a host's own server are never touched.
        assert cloud.standin.status(others) == "ACTIVE"
        assert cloud.standin.status(claimed.id) == "ACTIVE"
        assert actions(cloud.client, stray) == ["instance.reap"]
        assert log_lines(cloud.client)[0] == (
            f"deleted the server {stray} (stray.web.example.org), which no host claimed")
    finally:
        cloud.client.delete("/v1/hosts/claimed.web.example.org", headers=basic("carol"))


def test_the_reaper_undoes_a_launch_the_api_did_not_live_to_finish(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    # What an API killed between asking the cloud and storing the server's id leaves:
    # the host, its instance row still building, and a server that carries its tag.
    assert cloud.client.post("/v1/projects/web/hosts", json={"name": "halfway"},
                             headers=basic("carol")).status_code == 201
    app = cloud.client.application
    with app.app_context(), context.session() as session:
        session.add(Instance(host="halfway.web.example.org", incarnation="x", project="web",
                             provider="openstack", state="building", image="debian-12",
                             flavor="m1.small", addresses=[]))
        session.commit()
    server = cloud.standin.add_server("halfway.web.example.org",
                                      tags("halfway.web.example.org"))
    assert reap(cloud).undone == []  # a launch may still be under way
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert reap(cloud, later).undone == ["halfway.web.example.org"]
    assert cloud.standin.status(server) is None
    assert entry(slapd, f"dc=halfway.web.example.org,{HOSTS}") is None
    assert actions(cloud.client, "halfway.web.example.org")[-1] == "host.delete"


def test_the_reaper_reports_a_host_whose_server_is_gone_and_keeps_the_host(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    assert cloud.create("vanished").status_code == 201
    [created] = cloud.created
    del cloud.standin.servers[created.id]  # deleted behind opslab's back
    try:
        assert reap(cloud).gone == ["vanished.web.example.org"]
        instance = cloud.client.get("/v1/hosts/vanished.web.example.org",
                                    headers=basic("carol")).json["instance"]
        assert (instance["state"], instance["fault"]) == (
            "error", "the server is gone from the cloud (found by the reaper)")
        assert entry(slapd, f"dc=vanished.web.example.org,{HOSTS}") is not None
    finally:
        assert cloud.client.delete("/v1/hosts/vanished.web.example.org",
                                   headers=basic("carol")).status_code == 204


def test_a_launch_and_a_deletion_longer_than_the_directory_deadline_succeed(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    cloud.standin.on_create = lambda created: (cloud.created.append(created),
                                               Fate.active(after=2.5))[1]
    cloud.standin.delete_after = 2.5
    answer = cloud.create("slow")
    assert answer.status_code == 201, answer.json
    assert cloud.client.delete("/v1/hosts/slow.web.example.org",
                               headers=basic("carol")).status_code == 204
    assert entry(slapd, f"dc=slow.web.example.org,{HOSTS}") is None


def test_only_ipv4_addresses_become_a_records(cloud: Cloud, slapd: ThrowawaySlapd) -> None:
    cloud.standin.on_create = lambda created: Fate.active(addresses=("10.0.0.9",
                                                                     "2001:db8::9"))
    answer = cloud.create("dual")
    assert answer.status_code == 201, answer.json
    assert answer.json["host"]["instance"]["addresses"] == ["10.0.0.9", "2001:db8::9"]
    stored = entry(slapd, f"dc=dual.web.example.org,{HOSTS}")
    assert stored is not None
    assert stored["aRecord"] == [b"10.0.0.9"]
    assert cloud.client.delete("/v1/hosts/dual.web.example.org",
                               headers=basic("carol")).status_code == 204


def test_a_failed_launch_whose_server_will_not_go_leaves_it_to_the_reaper(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    cloud.standin.on_create = lambda created: (cloud.created.append(created),
                                               Fate.error("boom"))[1]
    cloud.standin.hang(10, lambda method, path: method == "DELETE")
    answer = cloud.create("sticky")
    assert answer.status_code == 502, answer.json
    [created] = cloud.created
    assert cloud.standin.status(created.id) == "ERROR"  # still there
    assert entry(slapd, f"dc=sticky.web.example.org,{HOSTS}") is None
    # Nothing claims it any more, and it no longer counts against the quota.
    assert cloud.client.get("/v1/projects/web/quota",
                            headers=basic("carol")).json["used"]["instances"] == 0
    cloud.standin.hangs.clear()
    assert reap(cloud).watching == [created.id]
    assert reap(cloud).deleted == [created.id]
    assert cloud.standin.status(created.id) is None


def test_the_reaper_removes_the_alias_of_a_launch_it_undoes(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    # The API died after naming the instance in DNS, before marking it active.
    assert cloud.create("named").status_code == 201
    [created] = cloud.created
    alias = f"dc=i-{created.id.replace('-', '')[:8]}.web.example.org,{DNS}"
    assert entry(slapd, alias) is not None
    app = cloud.client.application
    with app.app_context(), context.session() as session:
        row = session.get(Instance, "named.web.example.org")
        assert row is not None
        row.state = "building"
        session.commit()
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert reap(cloud, later).undone == ["named.web.example.org"]
    assert entry(slapd, alias) is None
    assert entry(slapd, f"dc=named.web.example.org,{HOSTS}") is None
    assert cloud.standin.status(created.id) is None


def test_one_server_the_cloud_will_not_delete_does_not_stop_the_reaper(cloud: Cloud) -> None:
    stuck = cloud.standin.add_server("a.web.example.org", tags("a.web.example.org"))
    stray = cloud.standin.add_server("b.web.example.org", tags("b.web.example.org"))
    assert sorted(reap(cloud).watching) == sorted([stuck, stray])
    cloud.standin.hang(10, lambda method, path: method == "DELETE" and stuck in path)
    done = reap(cloud)
    assert (done.deleted, done.failed) == ([stray], [stuck]), (done, stuck, stray)
    assert cloud.standin.status(stray) is None
    cloud.standin.hangs.clear()
    assert reap(cloud).deleted == [stuck]


def site_cloud_config(cloud: Cloud, monkeypatch: pytest.MonkeyPatch, path: Path,
                      text: str) -> None:
    """Point the API's instances.cloud_config_file at ``path``, holding ``text``."""
    path.write_text(text)
    app = cloud.client.application
    config = app.config["OPSLAB"]
    monkeypatch.setitem(app.config, "OPSLAB", config._replace(
        instances=config.instances._replace(cloud_config_file=str(path))))


def assert_nothing_left(cloud: Cloud, slapd: ThrowawaySlapd, host: str) -> None:
    assert cloud.created == []  # the cloud was never asked for a server
    assert entry(slapd, f"dc={host},{HOSTS}") is None
    assert cloud.client.get(f"/v1/hosts/{host}", headers=basic("carol")).status_code == 404
    assert cloud.client.get("/v1/projects/web/quota",
                            headers=basic("carol")).json["used"]["instances"] == 0
    assert actions(cloud.client, host) == ["host.create", "host.delete"]


@pytest.mark.parametrize(("text", "complaint"), [
    ("apt: {proxy: [\n", "is not valid YAML: "),
    ("- apt\n", "must be a mapping of cloud-config keys, not a list"),
    ("runcmd: {first: echo}\n",
     "runcmd is a mapping in the site's file but a list in opslab's template"),
])
def test_a_broken_site_cloud_config_refuses_the_launch_and_leaves_nothing(
    cloud: Cloud, slapd: ThrowawaySlapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    text: str, complaint: str
) -> None:
    site = tmp_path / "site-cloud-config.yaml"
    site_cloud_config(cloud, monkeypatch, site, text)
    answer = cloud.create("unborn")
    assert answer.status_code == 503, answer.json
    assert answer.json["error"].startswith(
        f"the instances' user-data cannot be made: the site's cloud-config {site}: {complaint}")
    assert_nothing_left(cloud, slapd, "unborn.web.example.org")

    # Mended, it is read again at the next launch: the site's file comes first.
    site.write_text("write_files:\n  - {path: /etc/pip.conf, content: \"[global]\\n\"}\n")
    again = cloud.create("unborn")
    assert again.status_code == 201, again.json
    [created] = cloud.created
    user_data = yaml.safe_load(created.user_data or "")
    assert [file["path"] for file in user_data["write_files"]] == [
        "/etc/pip.conf", "/etc/opslab/host-token"]
    assert again.json["token"] in user_data["write_files"][1]["content"]
    assert cloud.client.delete("/v1/hosts/unborn.web.example.org",
                               headers=basic("carol")).status_code == 204


def test_a_site_cloud_config_too_big_for_nova_is_refused_before_the_server_is_created(
    cloud: Cloud, slapd: ThrowawaySlapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nova's limit counts the merged user-data: 49,000 bytes of the site's are over it
    # in base64 only together with the template's.
    big = yaml.safe_dump({"write_files": [{"path": "/etc/big", "content": "x" * 49000}]})
    site_cloud_config(cloud, monkeypatch, tmp_path / "site-cloud-config.yaml", big)
    answer = cloud.create("big")
    assert answer.status_code == 502, answer.json
    assert "in base64, more than Nova's 65535" in answer.json["error"]
    assert_nothing_left(cloud, slapd, "big.web.example.org")


def test_the_reaper_deletes_ci_clones_older_than_a_run_and_nothing_else(
    cloud: Cloud, slapd: ThrowawaySlapd
) -> None:
    """A clone is a host of ci.clone_project (here web): once its instance is older than
    ci.run_timeout and the grace, its run is over or was killed (opslab ci run deletes its
    own clones), so the reaper deletes it, server and names; a younger one is kept."""
    app = cloud.client.application
    config = app.config["OPSLAB"]
    app.config["OPSLAB"] = config._replace(ci=config.ci._replace(clone_project="web",
                                                                 run_timeout=600.0))
    try:
        assert cloud.create("c42p3x0a1b2c-app1").status_code == 201
        [created] = cloud.created
        assert reap(cloud).clones == []  # a run may still be using it
        later = datetime.now(UTC) + timedelta(minutes=11)
        assert reap(cloud, later).clones == []  # within the grace
        much_later = datetime.now(UTC) + timedelta(minutes=13)
        assert reap(cloud, much_later).clones == ["c42p3x0a1b2c-app1.web.example.org"]
        assert cloud.standin.status(created.id) is None
        assert entry(slapd, f"dc=c42p3x0a1b2c-app1.web.example.org,{HOSTS}") is None
        assert actions(cloud.client, "c42p3x0a1b2c-app1.web.example.org")[-2:] == [
            "instance.delete", "host.delete"]
    finally:
        app.config["OPSLAB"] = config
        cloud.client.delete("/v1/hosts/c42p3x0a1b2c-app1.web.example.org",
                            headers=basic("carol"))
    # Another project's hosts are never the CI's clones, however old.
    assert cloud.create("old").status_code == 201
    try:
        assert reap(cloud, datetime.now(UTC) + timedelta(days=2)).clones == []
    finally:
        cloud.client.delete("/v1/hosts/old.web.example.org", headers=basic("carol"))
