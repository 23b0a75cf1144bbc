"""The seed card's curl example, verbatim but for the port, against
`python -m chat -m MODEL --server --nobrowser` and the real curl binary."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from tests.serverproc import ServerProcess

SEED_CARD_EXAMPLE = """\
curl http://localhost:8080/v1/chat/completions \\
  -H "Content-Type: application/json" \\
  -d '{
     "model": "gemma-2b-it",
     "messages": [{"role": "user", "content": "Say this is a test!"}],
     "temperature": 0.0
   }'
"""


def run_seed_card_example(port: int, timeout: float = 300) -> dict[str, Any]:
    """The example run by a shell, as a user pastes it (quoting, line
    continuations), against `port`; checks the answer's shape and returns it."""
    assert shutil.which("curl"), "curl is missing: run `make setup`"
    command = SEED_CARD_EXAMPLE.replace("localhost:8080", f"localhost:{port}")
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    reply: dict[str, Any] = json.loads(proc.stdout)
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["choices"][0]["message"]["content"].strip()
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] > 0
    return reply


def test_the_seed_card_curl_example(server: ServerProcess) -> None:
    run_seed_card_example(server.port)


def test_the_example_is_deterministic_at_temperature_zero(server: ServerProcess) -> None:
    command = SEED_CARD_EXAMPLE.replace("localhost:8080", f"localhost:{server.port}")
    answers = [
        json.loads(subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300).stdout)[
            "choices"
        ][0]["message"]["content"]
        for _ in range(2)
    ]
    assert answers[0] == answers[1]
