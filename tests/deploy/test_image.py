"""The container image, built and run for real with podman (no Docker engine is needed).

The Dockerfile's base image cannot be pulled here, so ``scripts/image-base.sh`` builds a
stand-in from a debootstrapped Debian (cached between runs) and the image is built with
``--pull=never``. The container then runs as Kubernetes runs it: read-only root filesystem
with only ``/tmp`` writable, every capability dropped, its own non-root user, the config
mounted as a ConfigMap-style directory (a timestamped folder, the ``..data`` symlink and
``gateway.yaml -> ..data/gateway.yaml``). Upstreams run on the host's loopback; the container
reaches them through slirp4netns' host-loopback address.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import CLIENT_KEY, UPSTREAM_KEY, ScriptedUpstream, Stream, chunk, free_port

REPO = Path(__file__).resolve().parents[2]
PODMAN = shutil.which("podman")
IMAGE = "localhost/vte-proxy:pytest"
CONTAINERS_CONF = REPO / "deploy" / "podman" / "containers.conf"
HOST_LOOPBACK = "10.0.2.2"  # the host's 127.0.0.1 as seen from a slirp4netns container

pytestmark = [
    pytest.mark.skipif(PODMAN is None, reason="podman is not installed: the container image is not built or run "
                                              "(`.ci/run` installs it: apt-get install podman runc debootstrap)"),
    pytest.mark.timeout(900),  # the first build of a session (stand-in base + pip install) takes minutes
]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}
    done = subprocess.run([str(PODMAN), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def image() -> str:
    """The project image, built once per session on the stand-in base (layers are reused)."""
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    base = subprocess.run([str(REPO / "scripts" / "image-base.sh")], capture_output=True, text=True, env=env,
                          timeout=900)
    assert base.returncode == 0, f"scripts/image-base.sh failed:\n{base.stdout}\n{base.stderr}"
    podman("build", "--format", "docker", "--pull=never", "--layers", "-q", "-t", IMAGE, str(REPO), timeout=900)
    return IMAGE


# ------------------------------------------------------------------ the mounted config
def config_text(upstream_port: int, demo_models: list[str]) -> str:
    return textwrap.dedent(f"""\
        version: 1
        keys:
          - name: team
            key: ${{TEST_CLIENT_KEY}}
        providers:
          - name: demo
            type: echo
            prefix: demo
            models: [{", ".join(demo_models)}]
          - name: up
            type: openai
            base_url: http://{HOST_LOOPBACK}:{upstream_port}/v1
            api_key: ${{TEST_UPSTREAM_KEY}}
            prefix: up
            models: [gpt-4o]
        server: {{shutdown_grace: 30s}}
        """)


class ConfigMapDir:
    """A directory laid out the way kubelet mounts a ConfigMap, updated the way kubelet does:
    write a new timestamped folder, point a temporary symlink at it, rename it over ``..data``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(mode=0o755)
        path.chmod(0o755)  # the container's user (10001) must be able to read it
        self._n = 0

    def write(self, text: str) -> None:
        self._n += 1
        folder = self.path / f"..2026_12_02_05_00_00.{self._n:09d}"
        folder.mkdir(mode=0o755)
        (folder / "gateway.yaml").write_text(text)
        (folder / "gateway.yaml").chmod(0o644)
        tmp = self.path / "..data_tmp"
        tmp.symlink_to(folder.name)
        tmp.rename(self.path / "..data")  # atomic: readers see the old or the new folder, never none
        link = self.path / "gateway.yaml"
        if not link.is_symlink():
            link.symlink_to("..data/gateway.yaml")


# ------------------------------------------------------------------ a running container
@dataclass
class Container:
    name: str
    port: int
    config: ConfigMapDir
    upstream: ScriptedUpstream
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the container did not become ready:\n{self.logs()}")

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=CLIENT_KEY, max_retries=0)

    def models(self) -> set[str]:
        return {m.id for m in self.client().models.list()}

    def exec(self, *cmd: str) -> str:
        return podman("exec", self.name, *cmd).stdout


def start_container(image: str, config: ConfigMapDir, upstream: ScriptedUpstream) -> Container:
    """Run the image the way the chart runs it (read-only root, /tmp only writable, no
    capabilities, the image's own user), publishing its port on the host's loopback only."""
    box = Container(f"vte-pytest-{uuid.uuid4().hex[:10]}", free_port(), config, upstream)
    podman("run", "-d", "--name", box.name,
           "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=64m,mode=1777",
           "--cap-drop=ALL", "--security-opt=no-new-privileges",
           "--network", "slirp4netns:allow_host_loopback=true", "-p", f"127.0.0.1:{box.port}:8050",
           "-v", f"{config.path}:/etc/vte-proxy:ro",
           "-e", f"TEST_CLIENT_KEY={CLIENT_KEY}", "-e", f"TEST_UPSTREAM_KEY={UPSTREAM_KEY}",
           "-e", "VTE_LOG_FORMAT=text", image)
    try:
        box.wait_ready()
    except BaseException:
        remove(box)
        raise
    return box


def remove(box: Container) -> None:
    podman("rm", "--force", "--time", "0", box.name, check=False)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def container(image: str, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    config = ConfigMapDir(tmp_path_factory.mktemp("image") / "config")
    config.write(config_text(upstream.port, ["echo"]))
    box = start_container(image, config, upstream)
    yield box
    remove(box)


# ------------------------------------------------------------------ tests
def test_answers_the_demo_model(container: Container) -> None:
    reply = container.client().chat.completions.create(
        model="demo/echo", messages=[{"role": "user", "content": "hello from the container"}])
    assert reply.model == "demo/echo"
    assert reply.choices[0].message.content == "hello from the container"
    assert container.models() == {"demo/echo", "up/gpt-4o"}


def test_reaches_an_upstream_from_inside(container: Container) -> None:
    container.upstream.push(Stream([chunk("gpt-4o", {"role": "assistant", "content": ""}),
                                    chunk("gpt-4o", {"content": "streamed"}), chunk("gpt-4o", {}, "stop")]))
    stream = container.client().chat.completions.create(
        model="up/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "streamed"
    assert container.upstream.last().headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_runs_as_its_non_root_user_on_jemalloc(container: Container) -> None:
    assert container.exec("id", "-u").strip() == "10001"
    maps = container.exec("cat", "/proc/1/maps")  # PID 1 is the gateway itself (exec-form ENTRYPOINT)
    assert "libjemalloc.so.2" in maps
    assert "vte-proxy" in container.exec("cat", "/proc/1/cmdline").replace("\0", " ")


def test_root_filesystem_is_read_only(container: Container) -> None:
    probe = "import pathlib\nfor p in ('/opt/venv/x', '/tmp/x'):\n    try:\n        pathlib.Path(p).write_text('x')\n" \
            "        print(p, 'writable')\n    except OSError:\n        print(p, 'read-only')"
    assert container.exec("python", "-c", probe).split("\n")[:2] == ["/opt/venv/x read-only", "/tmp/x writable"]


def test_healthcheck_of_the_image_passes(container: Container) -> None:
    # --format docker keeps HEALTHCHECK; run it once by hand (no systemd timers here).
    assert podman("healthcheck", "run", container.name, check=False).returncode == 0, container.logs()


def test_hot_reload_on_configmap_swap(container: Container) -> None:
    container.config.write(config_text(container.upstream.port, ["echo", "second"]))
    deadline = time.monotonic() + 30
    while "demo/second" not in container.models():
        assert time.monotonic() < deadline, f"the new model never appeared:\n{container.logs()}"
        time.sleep(0.2)
    reply = container.client().chat.completions.create(
        model="demo/second", messages=[{"role": "user", "content": "reloaded"}])
    assert reply.choices[0].message.content == "reloaded"


def test_stop_drains_an_in_flight_stream(image: str, upstream: ScriptedUpstream, tmp_path: Path) -> None:
    config = ConfigMapDir(tmp_path / "config")
    config.write(config_text(upstream.port, ["echo"]))
    box = start_container(image, config, upstream)
    try:
        words = [f"w{i} " for i in range(12)]
        upstream.push(Stream([chunk("gpt-4o", {"role": "assistant", "content": ""}),
                              *(chunk("gpt-4o", {"content": w}) for w in words), chunk("gpt-4o", {}, "stop")],
                             delay=0.25))
        lines: list[str] = []
        first = threading.Event()

        def read() -> None:
            body = {"model": "up/gpt-4o", "stream": True, "messages": [{"role": "user", "content": "long"}]}
            with httpx.stream("POST", box.url + "/v1/chat/completions", json=body, timeout=60,
                              headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as reply:
                for line in reply.iter_lines():
                    lines.append(line)
                    first.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert first.wait(20), box.logs()
        podman("stop", "--time", "30", box.name, timeout=60)  # SIGTERM to PID 1, returns once it exited
        reader.join(30)
        data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
        assert data[-1] == "[DONE]", f"stream cut on stop: {lines[-3:]}\n{box.logs()}"
        assert "".join(w for w in words if any(w.strip() in d for d in data)) == "".join(words)
        state = podman("inspect", "--format", "{{.State.ExitCode}}", box.name).stdout.strip()
        assert state == "0", box.logs()
    finally:
        remove(box)
