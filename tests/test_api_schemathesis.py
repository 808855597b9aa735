"""The API against its own OpenAPI document, with schemathesis (in process, over ASGI): every
status a route returns is documented, every content type declared, every JSON body matches its
schema, and nothing is a server error, for valid and for invalid requests. Bounded: a few
generated cases per route and mode, no deadline."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from datascout.server.app import create_app  # noqa: E402
from test_campaign_support import make_image_campaign  # noqa: E402

TOKEN = "schema-token"
CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
OPERATIONS = [("GET", "/api/config"), ("POST", "/api/batch"), ("POST", "/api/labels"), ("GET", "/api/stats"),
              ("GET", "/api/export"), ("GET", "/api/items/{item_id}/image")]


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    """The app over an image campaign (so the image route serves real files), behind a token."""
    camp, ids, _ = make_image_campaign(tmp_path_factory.mktemp("schema"))
    directory = camp.directory
    camp.close()
    app = create_app(directory, token=TOKEN, select_in="thread")
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    found = {(op.ok().method.upper(), op.ok().path) for op in loaded.get_all_operations()}
    assert found == set(OPERATIONS)  # a new route is tested here too
    yield loaded, ids
    app.state.campaign.wait_idle(30)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("method,path", OPERATIONS)
def test_api_conforms_to_its_openapi(schema, method, path, mode):
    schema, ids = schema
    operation = schema[path][method]
    cases = operation.as_strategy(mode)
    if "{item_id}" in path:  # random ids are all 404: also ask for the items that exist
        cases = st.one_of(cases, *[operation.as_strategy(mode, path_parameters={"item_id": i}) for i in ids[:2]])

    @given(case=cases)
    @settings(max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)

    check()
