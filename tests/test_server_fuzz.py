"""A schema fuzz of the live server from its own /openapi.json: whatever a
client sends, the answer is never a 5xx and the server stays up.

Bounded: FUZZ_EXAMPLES examples per operation (CI's default is small; set
LLAMABIN_FUZZ_EXAMPLES for a longer run, as bench/RESULTS.md records). The
server runs with a small context, so a fuzzed `max_tokens` cannot make one
example run for minutes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.serverproc import ServerProcess

FUZZ_EXAMPLES = int(os.environ.get("LLAMABIN_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def fuzzed_server(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(smollm2, "-c", "256", "-n", "16", home=tmp_path_factory.mktemp("home"))
    yield proc
    assert proc.alive, proc.stderr[-2000:]
    assert proc.health()["status"] == "ok"
    proc.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: ServerProcess) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error(case: schemathesis.Case, fuzzed_server: ServerProcess) -> None:
    response = case.call(timeout=120)
    assert response.status_code < 500, (case.operation.label, case.body, response.status_code, response.text[:500])
    assert fuzzed_server.alive, fuzzed_server.stderr[-2000:]
