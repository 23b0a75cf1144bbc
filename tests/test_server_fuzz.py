"""A schema fuzz of the live server from its own /openapi.json: whatever a
client sends, the answer is never a 5xx and the server stays up.

Bounded: FUZZ_EXAMPLES examples per operation (CI's default is small; set
LLAMABIN_FUZZ_EXAMPLES for a longer run, as bench/RESULTS.md records). The
server runs with a small context, so a fuzzed `max_tokens` cannot make one
example run for minutes. Schemathesis's pytest plugin does not work with
this pytest, so each operation's strategy is driven by hypothesis here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.serverproc import ServerProcess

FUZZ_EXAMPLES = int(os.environ.get("LLAMABIN_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def fuzzed_server(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(smollm2, "-c", "256", "-n", "16", home=tmp_path_factory.mktemp("home"))
    yield proc
    proc.stop()


def test_no_input_gets_a_server_error(fuzzed_server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11, [op.label for op in operations]  # every API route
    seen: list[tuple[str, int]] = []
    for operation, mode in [(op, mode) for op in operations for mode in GenerationMode]:

        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))  # schema-valid data, and invalid
        def call(case: schemathesis.Case) -> None:
            response = case.call(timeout=120)
            seen.append((case.operation.label, response.status_code))
            assert response.status_code < 500, (
                case.operation.label,
                case.body,
                response.status_code,
                response.text[:500],
            )

        try:
            call()
        except Unsatisfiable:
            pass  # no invalid request exists for an operation without parameters
        assert fuzzed_server.alive, fuzzed_server.stderr[-2000:]
    assert fuzzed_server.health()["status"] == "ok"
    print(
        f"fuzz: {len(seen)} requests over {len(operations)} operations, valid and invalid, "
        f"{sum(1 for _, s in seen if s >= 500)} answered 5xx"
    )
