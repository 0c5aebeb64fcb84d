"""A CI run's record (opslab.ci.records) against the API served by gunicorn: the
dispatcher's recorder makes it when it queues the build, and the job started with that
event's GERRIT_EVENT_HASH finds the same record by its event key."""

import json
from pathlib import Path

import pytest

from opslab.ci.events import CommentAdded, parse_event
from opslab.ci.parameters import build_parameters, event_hash, read_parameters
from opslab.ci.records import ApiRecorder, api_client, create, run_key
from opslab.ci.trigger import RunKey
from opslab.config import ConfigError, load
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE
from tests.served_api import ServedApi
from tests.test_api_ci import CI_PASSWORD, ci_account  # noqa: F401 (a fixture)

REVISION = "89abcdef" * 5
COMMENT = {
    "type": "comment-added", "eventCreatedOn": 1764400000, "project": "operations/puppet",
    "change": {"project": "operations/puppet", "branch": "production", "number": 42,
               "id": "I" + "b" * 40, "subject": "web: a new motd\nsecond line",
               "url": "https://review.example.org/c/42", "status": "NEW"},
    "patchSet": {"number": 3, "revision": REVISION},
    "author": {"username": "olga", "name": "Olga"},
    "comment": "Patch Set 3:\n\ncheck infra",
}


def test_the_dispatchers_record_and_the_jobs_are_one_run(tmp_path: Path, slapd: ThrowawaySlapd,
                                                          ci_account: None) -> None:  # noqa: F811
    api = ServedApi(tmp_path, slapd, BASE)
    api.start()
    try:
        password = tmp_path / "ci-password"
        password.write_text(CI_PASSWORD)
        config_file = tmp_path / "ci.yaml"
        config_file.write_text(json.dumps({
            "ldap": {"base": BASE},
            "ci": {"api_url": api.url, "api_user": "cibot",
                   "api_password_file": str(password)}}))
        client = api_client(load(str(config_file)))
        assert client is not None
        event = parse_event(COMMENT)
        assert isinstance(event, CommentAdded)
        recorder = ApiRecorder(client)

        run_id = recorder.started(RunKey("operations/puppet", 42, 3, "check infra"), event, 7)

        assert run_id is not None
        stored = json.loads(client.request("GET", f"/v1/ci/runs/{run_id}").body)
        assert (stored["state"], stored["jenkins_queue_id"], stored["requested_by"],
                stored["subject"], stored["revision"]) == (
            "queued", 7, "olga", "web: a new motd", REVISION)
        # The job, with the parameters of that event, names the same run.
        parameters = read_parameters(build_parameters(event))
        assert parameters.event_hash == event_hash(event)
        key = run_key(parameters.project, parameters.change, parameters.patchset,
                      parameters.event_hash)
        assert key == stored["event_key"]
        again = create(client, {**{name: stored[name] for name in (
            "project", "change", "patchset", "revision", "branch", "trigger",
            "requested_by")}, "event_key": key, "state": "running"})
        assert (again["id"], again["state"]) == (int(run_id), "queued")
        client.request("PATCH", f"/v1/ci/runs/{run_id}", {"state": "running"})
        # The build starting, seen by the dispatcher after the job said running: the
        # URL is added, the state left as the job set it.
        recorder.update(run_id, state="running", build_url="https://jenkins.example.org/7/")
        stored = json.loads(client.request("GET", f"/v1/ci/runs/{run_id}").body)
        assert (stored["state"], stored["build_url"]) == (
            "running", "https://jenkins.example.org/7/")
        recorder.update(run_id, state="cancelled")
        assert json.loads(client.request("GET", f"/v1/ci/runs/{run_id}").body)["state"] == \
            "cancelled"
    finally:
        api.stop()


def test_an_api_user_without_a_password_file_is_refused(tmp_path: Path) -> None:
    config_file = tmp_path / "ci.yaml"
    config_file.write_text(json.dumps({"ldap": {"base": BASE},
                                       "ci": {"api_user": "cibot"}}))
    with pytest.raises(ConfigError, match=r"ci\.api_password_file"):
        api_client(load(str(config_file)))
    config_file.write_text(json.dumps({"ldap": {"base": BASE}}))
    assert api_client(load(str(config_file))) is None
