"""More users than one machine serves: replicas of the built file behind
real nginx, configured with deploy/nginx.conf as docs/deploy.md says, and
the other deployment recipes checked by their own tools."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.helpers import kill_tree
from tests.serverproc import ServerProcess
from tests.slowload import SlowLoad

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
needs_nginx = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK), reason="nginx is not installed (scripts/setup-system.sh)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """Debian's nginx in the foreground, with deploy/nginx.conf included as
    the docs say, its replicas and port changed to this test's."""

    def __init__(self, tmp: Path, replicas: list[str]) -> None:
        site = (DEPLOY / "nginx.conf").read_text()
        servers = re.findall(r"server 127\.0\.0\.1:\d+", site)
        assert len(servers) == len(replicas) == 2, servers
        for old, url in zip(servers, replicas, strict=True):
            site = site.replace(old, "server " + url.removeprefix("http://"), 1)
        self.port = _free_port()
        site, n = re.subn(r"listen 8080;", f"listen 127.0.0.1:{self.port};", site)
        assert n == 1
        (tmp / "llamabin.conf").write_text(site)
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / d).mkdir(exist_ok=True)
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach this test's folders
        (tmp / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n"
            "events { worker_connections 512; }\n"
            f"http {{\n  access_log {tmp}/access.log;\n  client_body_temp_path {tmp}/body;\n"
            f"  proxy_temp_path {tmp}/proxy;\n  fastcgi_temp_path {tmp}/fastcgi;\n"
            f"  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n  include {tmp}/llamabin.conf;\n}}\n"
        )
        argv = [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf")]
        check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{self.url}/health", timeout=5)
                break
            except httpx.TransportError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)


def _served(replica: str) -> int:
    """Chat completions a replica answered with 200, from its /metrics."""
    text = httpx.get(f"{replica}/metrics", timeout=10).text
    found = re.search(r'llamabin_http_requests_total\{path="/v1/chat/completions",status="200"\} (\d+)', text)
    return int(found.group(1)) if found else 0


@dataclass
class Outcome:
    finished: bool
    error: str | None = None


def _stream(base: str, i: int, max_tokens: int) -> Outcome:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)
    try:
        stream = client.chat.completions.create(
            model="any",
            messages=[{"role": "user", "content": f"Tell a long story about a dragon named {i}."}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
        )
        finish = None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        return Outcome(finish in ("stop", "length"), None if finish else "no finish_reason")
    except Exception as exc:  # a cut stream: what the client saw
        return Outcome(False, f"{type(exc).__name__}: {exc}")


@pytest.fixture
def two_replicas(built: Path, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    replicas = [
        ServerProcess(None, "-np", "4", "-c", "4096", "-t", "1", program=[str(built)], home=tmp_path / f"home{i}")
        for i in range(2)
    ]
    yield replicas
    for r in replicas:
        r.stop()


@pytest.fixture
def nginx(two_replicas: list[ServerProcess], tmp_path: Path) -> Iterator[Nginx]:
    (tmp_path / "nginx").mkdir()
    proxy = Nginx(tmp_path / "nginx", [r.url for r in two_replicas])
    yield proxy
    proxy.stop()


@needs_nginx
def test_eight_streams_through_nginx_all_finish_and_both_replicas_serve(
    nginx: Nginx, two_replicas: list[ServerProcess]
) -> None:
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: _stream(nginx.url, i, 48), range(8)))
    assert [o.error for o in outcomes if not o.finished] == []
    served = [_served(r.url) for r in two_replicas]
    assert sum(served) == 8
    assert min(served) >= 1, f"one replica served everything: {served}"


@needs_nginx
def test_killing_a_replica_sends_new_requests_to_the_survivor(
    nginx: Nginx, two_replicas: list[ServerProcess], record_property: pytest.RecordProperty
) -> None:
    doomed, survivor = two_replicas
    with ThreadPoolExecutor(8) as pool:
        streams = [pool.submit(_stream, nginx.url, i, 256) for i in range(8)]
        deadline = time.monotonic() + 60
        while _busy(doomed) is False:  # wait until it is generating for someone
            assert time.monotonic() < deadline, "the replica never got a stream"
            time.sleep(0.05)
        kill_tree(doomed.proc.pid)
        doomed.proc.wait(10)
        # Requests sent after the kill: none may fail, whether nginx has
        # noticed yet or not (a refused connection goes to the next replica).
        later = [pool.submit(_complete, nginx.url, i) for i in range(6)]
        later_errors = [e for e in (f.result() for f in later) if e is not None]
        outcomes = [f.result() for f in streams]
    cut = [o.error for o in outcomes if not o.finished]
    record_property("streams_cut_on_the_killed_replica", len(cut))
    print(f"\n{len(cut)} of 8 streams were cut when their replica was killed: {cut}")
    assert later_errors == []
    assert 1 <= len(cut) < 8, "the streams on the killed replica end with an error; the others finish"
    assert all(e is not None for e in cut)
    assert _served(survivor.url) >= 6 + (8 - len(cut))


@needs_nginx
def test_nginx_skips_a_replica_that_is_still_loading(smollm2: Path, tmp_path: Path) -> None:
    """A replica answers 503 "loading" until its model is loaded, and nginx
    (proxy_next_upstream http_503) sends the request to the other one."""
    (tmp_path / "loading").mkdir()
    loading = SlowLoad(tmp_path / "loading", smollm2)
    ready = ServerProcess(smollm2, "-np", "2", "-t", "1")
    try:
        assert loading.first_answer().status_code == 503
        (tmp_path / "nginx").mkdir()
        proxy = Nginx(tmp_path / "nginx", [loading.url, ready.url])
        try:
            errors = [_complete(proxy.url, i) for i in range(6)]
        finally:
            proxy.stop()
        assert errors == [None] * 6
        assert _served(ready.url) == 6
        assert httpx.get(f"{loading.url}/health", timeout=5).status_code == 503  # it never served them
    finally:
        loading.stop()
        ready.stop()


def _busy(replica: ServerProcess) -> bool:
    try:
        return bool(replica.health()["busy"])
    except httpx.TransportError:
        return False


def _complete(base: str, i: int) -> str | None:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)
    try:
        answer = client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": f"Say hello to {i}."}], max_tokens=8, temperature=0
        )
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if answer.choices[0].message.content else "empty answer"


# -- the other recipes, checked by real validators -----------------------------


def test_the_kubernetes_manifests_validate_strictly() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", str(DEPLOY / "kubernetes.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deployment/llamabin" in result.stdout + result.stderr
    assert "service/llamabin" in result.stdout + result.stderr


def test_the_kubernetes_probes_ask_health_and_wait_for_the_load() -> None:
    deployment = next(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "a big model needs minutes to load"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_systemd_unit_verifies(built: Path, tmp_path: Path) -> None:
    unit = (DEPLOY / "llamabin@.service").read_text().replace("/opt/llamabin/model", str(built))
    path = tmp_path / "llamabin@.service"
    path.write_text(unit)
    instance = tmp_path / "llamabin@8081.service"
    instance.symlink_to(path)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(instance)], capture_output=True, text=True, cwd=tmp_path
    )
    problems = [line for line in result.stderr.splitlines() if "llamabin" in line]
    assert result.returncode == 0 and problems == [], result.stderr


def test_the_container_recipe_runs_the_file_as_the_docs_say() -> None:
    recipe = (DEPLOY / "Containerfile").read_text()
    assert "STOPSIGNAL SIGINT" in recipe
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", recipe, re.M)
    assert entry is not None
    argv = json.loads(entry.group(1))
    assert argv[:2] == ["/opt/llamabin/model", "--server"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
