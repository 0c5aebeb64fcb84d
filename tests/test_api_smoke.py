"""Smoke results through the API: in run reports, from the agent's interval check, per host
incarnation, and whether a host is failing; on the real slapd and SQLite, PostgreSQL and
MariaDB where they are stored."""

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from opslab.agent.client import ApiClient, ApiRefused
from opslab.api.contract import Contract
from opslab.api.store import SmokeResult
from opslab.config import EncSettings
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, HOSTS, basic, bearer
from tests.served_api import ServedApi

HOST = "smoke1.web.example.org"
OTHER = "smoke2.web.example.org"
GOOD_RUN = {"status": "unchanged", "exit_code": 0}


def ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


def summary(minutes_ago: float, failed: int = 0, **fields: Any) -> dict[str, Any]:
    """A SmokeSummary of checks that ran ``minutes_ago``, ``failed`` of them failing."""
    failures = [{"class": "role::web", "check": f"http-{n}", "kind": "http",
                 "message": "connection refused"} for n in range(failed)]
    return {"checked_at": ago(minutes_ago), "commit": "a" * 40, "passed": 3, "failed": failed,
            "skipped": 1, "duration": 0.5, "error": None, "failures": failures,
            "truncated": False, **fields}


@contextlib.contextmanager
def host(client: FlaskClient, name: str) -> Iterator[str]:
    """A host created in web for the test; its token. Deleted afterwards."""
    created = client.post("/v1/projects/web/hosts", json={"name": name}, headers=basic("carol"))
    assert created.status_code == 201, created.json
    try:
        yield created.json["token"]
    finally:
        client.delete(f"/v1/hosts/{name}", headers=basic("carol"))


def view(client: FlaskClient, name: str = HOST) -> dict[str, Any]:
    response = client.get(f"/v1/hosts/{name}", headers=basic("dave"))
    assert response.status_code == 200, response.json
    document: dict[str, Any] = response.json
    return document


def put_smoke(client: FlaskClient, token: str, body: Any, name: str = HOST) -> Any:
    return client.put(f"/v1/hosts/{name}/smoke", json=body, headers=bearer(token))


def conforms(schema: str, document: Any) -> None:
    """``document`` is what the OpenAPI document's ``schema`` says the API answers."""
    contract = Contract()
    assert [error.message for error in contract.schema(schema).iter_errors(document)] == []


def test_a_report_carries_its_smoke_results_and_the_host_shows_them(
        stored_client: FlaskClient) -> None:
    with host(stored_client, HOST) as token:
        sent = summary(1, failed=1)
        posted = stored_client.post(f"/v1/hosts/{HOST}/reports", headers=bearer(token),
                                    json={"status": "changed", "exit_code": 2, "smoke": sent})
        assert posted.status_code == 201, posted.json
        report = posted.json
        conforms("StoredReport", report)
        stored = {**sent, "received_at": report["received_at"]}
        assert report["smoke"] == stored
        # The run changed what it was asked to; its checks did not all hold.
        assert report["failing"] is True

        # As stored (MariaDB keeps whole seconds of received_at).
        shown = view(stored_client)
        conforms("HostView", shown)
        [listed] = stored_client.get(f"/v1/hosts/{HOST}/reports", headers=basic("dave")).json
        assert shown["last_run"] == listed
        assert listed["smoke"] == {**stored, "received_at": listed["received_at"]}
        assert listed["failing"] is True
        assert (shown["smoke"], shown["failing"]) == (listed["smoke"], True)
        latest = {entry["host"]: entry for entry in
                  stored_client.get("/v1/projects/web/reports", headers=basic("dave")).json}
        assert latest[HOST] == listed

        # Checks that all hold, after a run that failed: the run fails the host.
        failed_run = {"status": "failed", "exit_code": 4, "smoke": summary(0)}
        posted = stored_client.post(f"/v1/hosts/{HOST}/reports", headers=bearer(token),
                                    json=failed_run).json
        assert (posted["failing"], posted["smoke"]["failed"]) == (True, 0)
        assert view(stored_client)["failing"] is True


def test_a_report_without_smoke_results_is_as_before(stored_client: FlaskClient) -> None:
    with host(stored_client, HOST) as token:
        good = stored_client.post(f"/v1/hosts/{HOST}/reports", json=GOOD_RUN,
                                  headers=bearer(token))
        assert good.status_code == 201, good.json
        assert (good.json["smoke"], good.json["failing"]) == (None, False)
        shown = view(stored_client)
        assert (shown["smoke"], shown["failing"]) == (None, False)

        for status in ("failed", "timeout", "disabled", "locked"):
            report = stored_client.post(f"/v1/hosts/{HOST}/reports", headers=bearer(token),
                                        json={"status": status, "exit_code": 1}).json
            assert report["failing"] is True, status
        # The same report with "smoke": null.
        report = stored_client.post(f"/v1/hosts/{HOST}/reports", headers=bearer(token),
                                    json={**GOOD_RUN, "smoke": None}).json
        assert (report["smoke"], report["failing"]) == (None, False)
        assert view(stored_client)["failing"] is False


def test_an_interval_check_fails_the_host_and_leaves_its_last_run_as_it_was(
        stored_client: FlaskClient) -> None:
    with host(stored_client, HOST) as token:
        stored_client.post(f"/v1/hosts/{HOST}/reports", headers=bearer(token),
                           json={**GOOD_RUN, "smoke": summary(10)})
        before = view(stored_client)
        assert before["failing"] is False

        put = put_smoke(stored_client, token, summary(1, failed=2))
        assert put.status_code == 200, put.json
        conforms("StoredSmoke", put.json)
        assert (put.json["failed"], len(put.json["failures"])) == (2, 2)

        after = view(stored_client)
        assert after["last_run"] == before["last_run"]
        assert after["last_run"]["failing"] is False
        assert (after["smoke"], after["failing"]) == (put.json, True)

        # The service is back: the next check clears the host, the last run untouched.
        assert put_smoke(stored_client, token, summary(0)).status_code == 200
        healed = view(stored_client)
        assert (healed["failing"], healed["last_run"]) == (False, before["last_run"])

        # Checks that cannot run at all fail the host too.
        broken = summary(0, error="the checks file does not parse", passed=0, skipped=0)
        assert put_smoke(stored_client, token, broken).json["error"] == broken["error"]
        assert view(stored_client)["failing"] is True


def test_a_later_passing_check_clears_what_the_runs_own_checks_found(
        stored_client: FlaskClient) -> None:
    with host(stored_client, HOST) as token:
        stored_client.post(f"/v1/hosts/{HOST}/reports", headers=bearer(token),
                           json={**GOOD_RUN, "smoke": summary(5, failed=1)})
        before = view(stored_client)
        assert before["failing"] is True
        put_smoke(stored_client, token, summary(1))
        shown = view(stored_client)
        # The run keeps its own results; the host goes by the latest.
        assert (shown["last_run"], shown["failing"]) == (before["last_run"], False)
        assert shown["last_run"]["failing"] is True


def test_older_results_never_replace_newer_ones(stored_client: FlaskClient) -> None:
    with host(stored_client, HOST) as token:
        newer = put_smoke(stored_client, token, summary(5)).json
        older = put_smoke(stored_client, token, summary(60, failed=1))
        assert older.status_code == 200
        assert older.json == newer
        assert view(stored_client)["smoke"] == newer

        # A report delivered late: it keeps its own older results; the host keeps the newer.
        report = stored_client.post(f"/v1/hosts/{HOST}/reports", headers=bearer(token),
                                    json={**GOOD_RUN, "smoke": summary(30, failed=1)}).json
        assert report["smoke"]["failed"] == 1
        shown = view(stored_client)
        assert (shown["smoke"], shown["failing"]) == (newer, False)

        # A report's newer results replace older ones.
        stored_client.post(f"/v1/hosts/{HOST}/reports", headers=bearer(token),
                           json={**GOOD_RUN, "smoke": summary(1, failed=3)})
        shown = view(stored_client)
        assert (shown["smoke"], shown["smoke"]["failed"]) == (shown["last_run"]["smoke"], 3)

        # Dated ahead by the agent's clock: taken as arrived now, so later results still count.
        ahead = put_smoke(stored_client, token, {**summary(0), "checked_at": "2999-01-01T00:00:00"})
        assert ahead.status_code == 200, ahead.json
        taken = datetime.fromisoformat(ahead.json["checked_at"])
        assert abs(taken - datetime.now(UTC)) < timedelta(minutes=1)
        assert put_smoke(stored_client, token, summary(0, failed=1)).json["failed"] == 1


def test_only_the_hosts_own_token_reports_its_smoke_results(client: FlaskClient) -> None:
    with host(client, HOST) as token, host(client, OTHER) as other:
        body = summary(1, failed=1)
        refused = put_smoke(client, other, body)
        assert refused.status_code == 403
        assert refused.json["error"] == f"this token belongs to {OTHER}, not {HOST}"
        for who in ("carol", "olga"):
            response = client.put(f"/v1/hosts/{HOST}/smoke", json=body, headers=basic(who))
            assert response.status_code == 403, who
            assert response.json["error"] == "only a host's own token may report its smoke tests"
        assert client.put(f"/v1/hosts/{HOST}/smoke", json=body).status_code == 401
        assert view(client)["smoke"] is None
        assert put_smoke(client, token, body).status_code == 200
        assert view(client)["smoke"]["failed"] == 1


@pytest.mark.parametrize(("body", "message"), [
    ({**summary(1), "colour": "red"}, "unknown fields: colour"),
    ({**summary(1), "failed": -1}, "failed: -1 is less than the minimum of 0"),
    (summary(1, failed=51), "failures: 51 items, more than the 50 allowed"),
    ({**summary(1), "checked_at": "x" * 65}, "checked_at: 65 characters, more than the 64 allowed"),
    ({**summary(1), "skipped": 2**31}, "skipped: 2147483648 is greater than the maximum"),
    ({key: value for key, value in summary(1).items() if key != "passed"},
     "'passed' is required"),
    ({**summary(1), "checked_at": "yesterday"}, "checked_at must be an ISO 8601 date and time"),
    ({**summary(1), "checked_at": "1969-12-31T23:59:59"},
     "checked_at must be a date between the years 1970 and 9999"),
    ({**summary(1), "commit": "HEAD"}, "commit"),
    ({**summary(1, failed=1), "failures": [{"class": "role::web", "check": "http"}]},
     "failures.0: 'message' is required"),
    ({**summary(1), "failures": [{"class": "a", "check": "b", "message": "c", "x": 1}]},
     "failures.0: unknown fields: x"),
])
def test_bad_smoke_results_are_refused_and_change_nothing(
        client: FlaskClient, body: dict[str, Any], message: str) -> None:
    with host(client, HOST) as token:
        response = put_smoke(client, token, body)
        assert response.status_code == 422
        assert message in response.json["error"]
        # In a run report, the same results refuse the report.
        report = client.post(f"/v1/hosts/{HOST}/reports", headers=bearer(token),
                             json={**GOOD_RUN, "smoke": body})
        assert report.status_code == 422
        assert message in report.json["error"]
        assert client.get(f"/v1/hosts/{HOST}/reports", headers=basic("dave")).json == []
        assert view(client)["smoke"] is None


def fail(client: FlaskClient, token: str) -> None:
    """A run whose checks found a failure, then an interval check that did too."""
    client.post(f"/v1/hosts/{HOST}/reports", headers=bearer(token),
                json={**GOOD_RUN, "smoke": summary(2, failed=1)})
    put_smoke(client, token, summary(1, failed=1))
    assert view(client)["failing"] is True


def starts_afresh(client: FlaskClient, token: str) -> None:
    """The host created again shows nothing of the deleted one's results."""
    shown = view(client)
    assert (shown["smoke"], shown["last_run"], shown["failing"]) == (None, None, False)
    names = [found["name"] for found in client.get("/v1/hosts?project=web&failing=true",
                                                   headers=basic("dave")).json]
    assert HOST not in names
    # Older results than the deleted host's still count for the new one.
    assert put_smoke(client, token, summary(60)).json["failed"] == 0
    assert view(client)["smoke"]["failed"] == 0


def test_a_host_created_again_has_no_smoke_results(stored_client: FlaskClient) -> None:
    with host(stored_client, HOST) as token:
        fail(stored_client, token)
    # Deleting the host retired its latest results with its token and agent state.
    with stored_client.application.extensions["opslab.sessions"]() as session:
        assert session.get(SmokeResult, HOST) is None
    with host(stored_client, HOST) as token:
        starts_afresh(stored_client, token)


def test_results_outlive_an_entry_deleted_by_hand_but_never_show_for_the_new_host(
        client: FlaskClient, slapd: ThrowawaySlapd) -> None:
    """Deleted in the directory, not through the API: nothing is retired, and the results
    stay stored, but they are the earlier incarnation's."""
    with host(client, HOST) as token:
        fail(client, token)
        connection = slapd.connect()
        connection.delete_s(f"dc={HOST},{HOSTS}")
        connection.unbind_s()
    with host(client, HOST) as token:
        starts_afresh(client, token)


def test_hosts_are_queried_by_whether_they_are_failing(stored_client: FlaskClient) -> None:
    failing_run = "smoke3.web.example.org"
    with host(stored_client, HOST) as token, host(stored_client, OTHER) as other, \
            host(stored_client, failing_run) as third:
        # HOST: a good run, then a check that fails; OTHER: a good run, good checks;
        # the third: a failed run, no checks.
        stored_client.post(f"/v1/hosts/{HOST}/reports", json=GOOD_RUN, headers=bearer(token))
        put_smoke(stored_client, token, summary(1, failed=1))
        stored_client.post(f"/v1/hosts/{OTHER}/reports", headers=bearer(other),
                           json={**GOOD_RUN, "smoke": summary(1)})
        stored_client.post(f"/v1/hosts/{failing_run}/reports", headers=bearer(third),
                           json={"status": "failed", "exit_code": 4})

        def names(query: str) -> list[str]:
            response = stored_client.get(f"/v1/hosts?{query}", headers=basic("dave"))
            assert response.status_code == 200, response.json
            return [found["name"] for found in response.json]

        assert names("project=web&failing=true") == [HOST, failing_run]
        assert names("project=web&failing=false") == [OTHER, "web1.web.example.org"]
        assert names("failing=true&project=tools") == []
        assert names("project=web") == [HOST, OTHER, failing_run, "web1.web.example.org"]
        for query, shown in (("failing=maybe", "'maybe'"), ("failing=", "''"),
                             ("failing=true&failing=false", "'true', 'false'")):
            refused = stored_client.get(f"/v1/hosts?{query}", headers=basic("dave"))
            assert refused.status_code == 422, query
            assert refused.json["error"] == \
                f"failing must be given once, as true or false, got {shown}"


def test_the_agent_client_puts_smoke_results(tmp_path: Path, slapd: ThrowawaySlapd,
                                             people: None) -> None:
    """ApiClient.put_smoke against the API under gunicorn, as the agent sends them."""
    api = ServedApi(tmp_path, slapd, BASE)
    api.start()
    try:
        status, body = api.request("POST", "/v1/projects/web/hosts", {"name": HOST},
                                   basic("carol"))
        assert status == 201, body
        token = tmp_path / "host-token"
        token.write_text(json.loads(body)["token"] + "\n")
        client = ApiClient(EncSettings(api_url=api.url, api_token_file=str(token),
                                       api_timeout=10))
        sent = summary(1, failed=1)
        client.put_smoke(HOST, sent)
        status, body = api.request("GET", f"/v1/hosts/{HOST}", headers=basic("dave"))
        shown = json.loads(body)
        assert (shown["smoke"]["failures"], shown["failing"]) == (sent["failures"], True)
        with pytest.raises(ApiRefused) as refused:
            client.put_smoke(HOST, {**sent, "colour": "red"})
        assert refused.value.status == 422
        assert "unknown fields: colour" in refused.value.reason
        assert api.request("DELETE", f"/v1/hosts/{HOST}", headers=basic("carol"))[0] == 204
    finally:
        api.stop()
