"""Schema-driven fuzzing: schemathesis generates requests from the served OpenAPI
document, valid and invalid, and the API must answer every one without a 5xx and
with an answer that conforms to the response schema the document declares.

Reads are also aimed at hosts that exist (one created through the API, with a
report, an agent state and smoke results; one written before opslab; one naming
its project), so the schema of real answers is checked, not only that of refusals.
"""

import schemathesis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.conftest import basic, bearer

EXAMPLES_PER_OPERATION = 25
FUZZED = "fuzzed.web.example.org"
EXISTING = [FUZZED, "web1.web.example.org", "builder.example.org"]


def test_no_request_gets_a_server_error_or_an_undocumented_answer(
    stored_client: FlaskClient,
) -> None:
    created = stored_client.post("/v1/projects/web/hosts", headers=basic("carol"),
                          json={"name": FUZZED, "classes": ["ntp"],
                                "class_parameters": {"ntp": {"servers": ["a"]}}})
    token = created.json["token"]
    stored_client.post(f"/v1/hosts/{FUZZED}/reports", headers=bearer(token),
                json={"status": "failed", "exit_code": 4, "truncated": True,
                      "failed_resources": [{"resource": "Exec[x]", "messages": ["boom"]}]})
    stored_client.put(f"/v1/hosts/{FUZZED}/agent", headers=bearer(token),
               json={"disabled": True, "reason": "fuzzing",
                     "changed_at": "2026-11-01T00:00:00+00:00"})
    stored_client.put(f"/v1/hosts/{FUZZED}/smoke", headers=bearer(token),
               json={"checked_at": "2026-11-01T00:00:00+00:00", "passed": 1, "failed": 1,
                     "skipped": 0, "failures": [{"class": "ntp", "check": "port",
                                                 "message": "closed"}]})
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.yaml", stored_client.application)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.label for operation in operations} >= {
        "POST /v1/projects/{project}/hosts", "PATCH /v1/hosts/{fqdn}",
        "POST /v1/hosts/{fqdn}/reports", "GET /v1/nodes/{fqdn}", "POST /v1/log/chat"}
    failures = []
    try:
        for operation in operations:

            @given(case=operation.as_strategy(), existing=st.sampled_from([None, *EXISTING]))
            # Derandomized: the suite explores the same cases every run, so CI is
            # repeatable; longer random runs are for looking (raise the count).
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                      derandomize=True, suppress_health_check=list(HealthCheck))
            def conforms(case: schemathesis.Case, existing: str | None) -> None:
                # Only reads are aimed at existing hosts: the shared directory's
                # example entries must survive the fuzzing.
                if existing and case.method == "GET" and "fqdn" in (case.path_parameters or {}):
                    case.path_parameters["fqdn"] = existing
                # As a member of operations, so that every code path is open.
                response = case.call(headers=basic("olga"))
                try:
                    case.validate_response(response, checks=[not_a_server_error,
                                                             response_schema_conformance])
                except AssertionError as error:
                    failures.append(f"{case.method} {case.formatted_path} {case.query or ''} "
                                    f"-> {response.status_code}: {str(error)[:500]}")

            conforms()
    finally:
        stored_client.delete(f"/v1/hosts/{FUZZED}", headers=basic("carol"))
    assert failures == []
