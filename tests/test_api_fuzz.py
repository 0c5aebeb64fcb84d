"""Schema-driven fuzzing: schemathesis generates requests from the served OpenAPI
document, valid and invalid, and the API must answer every one without a 5xx."""

import schemathesis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings

from tests.conftest import basic

EXAMPLES_PER_OPERATION = 25


def test_no_request_gets_a_server_error(client: FlaskClient) -> None:
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.yaml", client.application)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.label for operation in operations} >= {
        "POST /v1/projects/{project}/hosts", "PATCH /v1/hosts/{fqdn}",
        "POST /v1/hosts/{fqdn}/reports", "GET /v1/nodes/{fqdn}", "POST /v1/log/chat"}
    failures = []
    for operation in operations:

        @given(case=operation.as_strategy())
        # Derandomized: the suite explores the same cases every run, so CI is
        # repeatable; longer random runs are for looking (raise the count).
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  derandomize=True, suppress_health_check=list(HealthCheck))
        def no_server_error(case: schemathesis.Case) -> None:
            # As a member of operations, so that every code path is open.
            response = case.call(headers=basic("olga"))
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query or ''} "
                                f"-> {response.status_code}: {response.text[:300]}")

        no_server_error()
    assert failures == []
