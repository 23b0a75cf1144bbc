#!/usr/bin/env bash
# Smoke test of a built file, as a user would first try it: the manual, one
# completion, --doctor, and the server's /health and one chat request.
#
#   scripts/ci/smoke-test.sh FILE
set -euo pipefail
exe=${1:?usage: smoke-test.sh FILE}
fail() { echo "smoke-test: $*" >&2; exit 1; }

"$exe" --help | grep -q -- "--server" || fail "--help does not show the manual"
"$exe" --version >/dev/null || fail "--version failed"
text=$("$exe" --cli -p "The capital of France is" -n 8 --temp 0 --log-disable)
[ -n "${text//[[:space:]]/}" ] || fail "--cli printed nothing"
echo "cli: $text"
"$exe" --doctor | tee /dev/stderr | grep -q "^kernels:" || fail "--doctor says nothing about the CPU kernels"

port=$("${PYTHON:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$exe" --server --nobrowser --port "$port" --log-disable &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    kill -0 $pid 2>/dev/null || fail "the server exited before it was ready"
    sleep 0.5
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || fail "/health never answered"
reply=$(curl -sf "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8, "temperature": 0}')
echo "server: $reply"
case $reply in *'"content"'*) ;; *) fail "no answer from /v1/chat/completions" ;; esac
echo "smoke-test: ok"
