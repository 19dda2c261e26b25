"""Hostile input: every CRI RPC of a real crio driven with generated and mutated messages.

Hypothesis builds requests from the proto's descriptors (huge strings, maps
of thousands of entries, ``..`` paths, NUL bytes, invalid UTF-8, the extremes
of every integer type, unknown enum numbers), mutates valid requests that
name real pods and containers one field at a time, and breaks the encoded
bytes. Every call must end with a status code: never UNKNOWN, never an
INTERNAL that wraps an exception crio did not raise on purpose; crio must
stay up, its log must hold no traceback, and at the end ``crio check`` finds
its state and store consistent and nothing of the run is left on the host.

Requests are kept off the host's own paths: an absolute cgroup parent, log
directory or mount source is moved under the test's private tree (the
validation of the rest of the value still runs), and crio reaches no
registry (its HTTP proxy is a closed port).
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import socket
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from crio.api import api_pb2 as api
from support.cri import PAUSE_IMAGE, Cri, container_config, pod_config, seed_images
from support.daemon import CrioProcess
from support.node import Node, stop_node
from support.protofuzz import messages, mutated, wire_garbage
from support.spdy_client import exec_session

#: Examples per RPC (fewer for the RPCs that destroy the objects the next one needs).
#: ``CRIO_FUZZ_EXAMPLES=N`` multiplies both for a longer hunt outside the suite.
SCALE = int(os.environ.get("CRIO_FUZZ_EXAMPLES", "1"))
EXAMPLES = 40 * SCALE
EXAMPLES_DESTRUCTIVE = 15 * SCALE
#: Small, so that the oversized case is cheap to send.
MAX_RECV = 4 * 1024 * 1024
SERVICES = ("RuntimeService", "ImageService")
METHODS = [
    (service, method)
    for service in SERVICES
    for method in api.DESCRIPTOR.services_by_name[service].methods
]
#: Exits at once on the stop signal, so that a fuzzed stop never waits its timeout out.
QUICK_TO_STOP = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]


class Target:
    """The crio under fuzz, and real objects for mutated requests to name."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.channel = grpc.insecure_channel(
            f"unix://{node.crio.socket}",
            options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
        )
        self.pod_config = node.pod()
        self.pod_id = ""
        self.running = self.created = ""
        self.calls = 0
        #: (RPC, status code) -> how many answers.
        self.answers: Counter[tuple[str, str]] = Counter()

    def ensure(self) -> None:
        """Make the pod and its two containers again if a fuzzed call removed them."""
        cri = self.node.cri
        pods = {p.id: p for p in cri.pods()}
        ours = pods.get(self.pod_id)
        for pod_id in pods:
            if pod_id != self.pod_id:  # pods the fuzzer made: keep the node small
                cri.stop_pod(pod_id)
                cri.remove_pod(pod_id)
        if ours is None or ours.state != api.SANDBOX_READY:
            if ours is not None:
                cri.stop_pod(self.pod_id)
                cri.remove_pod(self.pod_id)
            self.pod_config = self.node.pod()
            self.pod_id = cri.run_pod(self.pod_config, runtime_handler="runc")
            self.running = self.created = ""
        states = {c.id: c.state for c in cri.containers(pod_sandbox_id=self.pod_id)}
        if states.get(self.running) != api.CONTAINER_RUNNING:
            self.running = cri.create(self.pod_id, _config("run", QUICK_TO_STOP), start=True)
        if states.get(self.created) != api.CONTAINER_CREATED:
            self.created = cri.create(self.pod_id, _config("made", QUICK_TO_STOP))

    def values(self) -> dict[str, str]:
        """What each placeholder stands for in this example (see :data:`PLACEHOLDERS`)."""
        meta = self.pod_config.metadata
        fresh = secrets.token_hex(6)
        return {
            "<pod>": self.pod_id, "<running>": self.running, "<created>": self.created,
            "<short>": self.pod_id[:12], "<name>": meta.name, "<uid>": meta.uid,
            "<fresh>": fresh, "<cgroup>": self.node.cgroup_root, "<base>": str(self.node.base),
        }  # fmt: skip


#: Stand-ins for the real objects in generated and template requests, so that what
#: Hypothesis draws does not depend on which ids the objects have this time.
PLACEHOLDERS = ("<pod>", "<running>", "<created>", "<short>", "<name>", "<uid>")
VALID = (*PLACEHOLDERS, "runc", "crun", "localhost/busybox:latest", PAUSE_IMAGE)


def _config(prefix: str, command: list[str]) -> api.ContainerConfig:
    return container_config(f"{prefix}-{secrets.token_hex(4)}", command)


def _pod_template() -> api.PodSandboxConfig:
    config = pod_config("fuzz-<fresh>")
    config.metadata.uid = "<fresh>"
    config.linux.cgroup_parent = "<cgroup>/pod-<fresh>"
    config.log_directory = "<base>/pods/<fresh>"
    return config


def _templates() -> dict[str, Message]:
    """One valid request per RPC, naming the target's objects through placeholders."""
    pod, run, made = "<pod>", "<running>", "<created>"
    image = api.ImageSpec(image="localhost/busybox:latest")
    return {
        "Version": api.VersionRequest(version="v1"),
        "RunPodSandbox": api.RunPodSandboxRequest(config=_pod_template(), runtime_handler="runc"),
        "StopPodSandbox": api.StopPodSandboxRequest(pod_sandbox_id=pod),
        "RemovePodSandbox": api.RemovePodSandboxRequest(pod_sandbox_id=pod),
        "PodSandboxStatus": api.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True),
        "ListPodSandbox": api.ListPodSandboxRequest(
            filter=api.PodSandboxFilter(id=pod, label_selector={"a": "b"})
        ),
        "CreateContainer": api.CreateContainerRequest(
            pod_sandbox_id=pod,
            config=container_config("m-<fresh>", QUICK_TO_STOP),
            sandbox_config=_pod_template(),
        ),
        "StartContainer": api.StartContainerRequest(container_id=made),
        "StopContainer": api.StopContainerRequest(container_id=run, timeout=2),
        "RemoveContainer": api.RemoveContainerRequest(container_id=made),
        "ListContainers": api.ListContainersRequest(
            filter=api.ContainerFilter(pod_sandbox_id=pod, label_selector={"a": "b"})
        ),
        "ContainerStatus": api.ContainerStatusRequest(container_id=run, verbose=True),
        "UpdateContainerResources": api.UpdateContainerResourcesRequest(
            container_id=run,
            linux=api.LinuxContainerResources(cpu_shares=512, memory_limit_in_bytes=1 << 28),
        ),
        "ReopenContainerLog": api.ReopenContainerLogRequest(container_id=run),
        "ExecSync": api.ExecSyncRequest(container_id=run, cmd=["echo", "x"], timeout=5),
        "Exec": api.ExecRequest(container_id=run, cmd=["sh"], stdin=True, stdout=True),
        "Attach": api.AttachRequest(container_id=run, stdout=True),
        "PortForward": api.PortForwardRequest(pod_sandbox_id=pod, port=[80]),
        "ContainerStats": api.ContainerStatsRequest(container_id=run),
        "ListContainerStats": api.ListContainerStatsRequest(
            filter=api.ContainerStatsFilter(pod_sandbox_id=pod)
        ),
        "PodSandboxStats": api.PodSandboxStatsRequest(pod_sandbox_id=pod),
        "ListPodSandboxStats": api.ListPodSandboxStatsRequest(
            filter=api.PodSandboxStatsFilter(id=pod)
        ),
        "UpdateRuntimeConfig": api.UpdateRuntimeConfigRequest(
            runtime_config=api.RuntimeConfig(
                network_config=api.NetworkConfig(pod_cidr="10.88.0.0/16")
            )
        ),
        "Status": api.StatusRequest(verbose=True),
        "CheckpointContainer": api.CheckpointContainerRequest(container_id=run),
        "GetContainerEvents": api.GetEventsRequest(),
        "ListMetricDescriptors": api.ListMetricDescriptorsRequest(),
        "ListPodSandboxMetrics": api.ListPodSandboxMetricsRequest(),
        "RuntimeConfig": api.RuntimeConfigRequest(),
        "ListImages": api.ListImagesRequest(filter=api.ImageFilter(image=image)),
        "ImageStatus": api.ImageStatusRequest(image=image, verbose=True),
        "PullImage": api.PullImageRequest(image=api.ImageSpec(image="registry.invalid/x:1")),
        "RemoveImage": api.RemoveImageRequest(image=api.ImageSpec(image="no/such:image")),
        "ImageFsInfo": api.ImageFsInfoRequest(),
    }


TEMPLATES = _templates()
#: RPCs that destroy the objects the next example needs: fewer examples (each one
#: costs a new pod or container).
DESTRUCTIVE = {"RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "StartContainer",
               "StopContainer", "RemoveContainer", "CreateContainer"}  # fmt: skip


def substitute(message: Message, values: dict[str, str]) -> Message:
    """Put the real values in for the placeholders, in every string at any depth."""

    def real(text: str) -> str:
        for key, value in values.items():
            if key in text:
                text = text.replace(key, value)
        return text

    for field, value in message.ListFields():
        if field.type == field.TYPE_STRING:
            if field.is_repeated:
                value[:] = [real(v) for v in value]
            else:
                setattr(message, field.name, real(value))
        elif field.type == field.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                entry = field.message_type.fields_by_name["value"]
                items = dict(value)
                value.clear()
                for key, item in items.items():
                    if entry.type == entry.TYPE_MESSAGE:
                        value[real(key)].CopyFrom(substitute(item, values))
                    elif entry.type == entry.TYPE_STRING:
                        value[real(key)] = real(item)
                    else:
                        value[real(key)] = item
            else:
                for item in value if field.is_repeated else [value]:
                    substitute(item, values)
    return message


PRIVATE_PATHS = ("cgroup_parent", "log_directory", "host_path")


def contain(message: Message, target: Target) -> Message:
    """Keep a request off the host's own paths (see the module docstring)."""
    private = str(target.node.base)
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                continue
            for item in value if field.is_repeated else [value]:
                contain(item, target)
        elif field.name in PRIVATE_PATHS and _host_path(value):
            root = target.node.cgroup_root if field.name == "cgroup_parent" else private
            setattr(message, field.name, f"{root}/fuzz{value}")
    if isinstance(message, api.RemoveImageRequest) and message.image.image in VALID:
        message.image.image = "no/such:image"  # the images the fixtures run from stay
    return message


def _host_path(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/") and ".." not in value.split("/")


def call(target: Target, service: str, method: str, request: bytes) -> tuple[str, str]:
    """Send ``request`` (encoded) and return (status code name, details)."""
    descriptor = api.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    path = f"/runtime.v1.{service}/{method}"
    target.calls += 1
    try:
        if descriptor.server_streaming:
            stream = target.channel.unary_stream(path)(request, timeout=0.5)
            for _ in stream:
                pass
        else:
            target.channel.unary_unary(path)(request, timeout=60)
    except grpc.RpcError as exc:
        target.answers[method, exc.code().name] += 1
        return exc.code().name, exc.details() or ""
    target.answers[method, "OK"] += 1
    return "OK", ""


def check_answer(target: Target, method: str, code: str, details: str) -> None:
    assert target.node.crio.proc is not None and target.node.crio.proc.poll() is None, (
        f"crio died on {method}"
    )
    assert code != "UNKNOWN", f"{method}: UNKNOWN: {details}"
    if code == "DEADLINE_EXCEEDED":
        assert method == "GetContainerEvents", f"{method} did not answer in time"
    assert "internal error:" not in details, f"{method}: {details}"


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    for binary in ("/usr/bin/runc", "/usr/bin/conmon"):
        if not os.access(binary, os.X_OK):
            pytest.skip(f"{binary} is not installed")
    process = CrioProcess(
        {
            "crio.image": {"pause_image": PAUSE_IMAGE, "pause_command": "/pause"},
            "crio.api": {"grpc_max_recv_msg_size": MAX_RECV},
        }
    )
    seed_images(process.base / "root", process.base / "runroot")
    # No registry is reachable: a fuzzed PullImage fails at once instead of waiting on DNS.
    closed = "http://127.0.0.1:9"
    process.start(env={"HTTP_PROXY": closed, "HTTPS_PROXY": closed, "NO_PROXY": ""})
    channel = grpc.insecure_channel(f"unix://{process.socket}")
    node = Node(process, Cri(channel), _channel=channel)
    made = Target(node)
    try:
        made.ensure()
        yield made
    finally:
        made.channel.close()
        stop_node(node)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[m.name for _, m in METHODS])
def test_every_rpc_answers_hostile_requests_with_a_status(
    target: Target, service: str, method: Any
) -> None:
    request_cls = getattr(api, method.input_type.name)
    template = TEMPLATES[method.name]

    @settings(
        max_examples=EXAMPLES_DESTRUCTIVE if method.name in DESTRUCTIVE else EXAMPLES,
        deadline=None,
        phases=(Phase.generate,),
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        target.ensure()
        how = data.draw(st.sampled_from(["generated", "mutated", "wire"]), label="how")
        values = target.values()
        if how == "wire":
            real = substitute(type(template).FromString(template.SerializeToString()), values)
            encoded = data.draw(wire_garbage(real), label="bytes")
        else:
            strategy = (
                messages(request_cls, valid=VALID)
                if how == "generated"
                else mutated(template, valid=VALID)
            )
            message = contain(substitute(data.draw(strategy, label="request"), values), target)
            encoded = message.SerializeToString()
        code, details = call(target, service, method.name, encoded)
        check_answer(target, method.name, code, details)

    fuzz()


def test_oversized_messages_are_refused_and_crio_stays_up(target: Target) -> None:
    big = api.RunPodSandboxRequest(config=pod_config())
    big.config.annotations["x"] = "a" * (MAX_RECV + 1)
    code, _ = call(target, "RuntimeService", "RunPodSandbox", big.SerializeToString())
    assert code == "RESOURCE_EXHAUSTED"
    below = api.ListPodSandboxRequest(
        filter=api.PodSandboxFilter(label_selector={"x": "a" * (MAX_RECV - 1024)})
    )
    code, _ = call(target, "RuntimeService", "ListPodSandbox", below.SerializeToString())
    assert code == "OK"


def test_socket_is_root_only(target: Target) -> None:
    socket_path = target.node.crio.socket
    info = os.stat(socket_path)
    assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o660, 0, 0)
    # Another user who can reach the directory still cannot connect.
    base = target.node.base
    mode = base.stat().st_mode & 0o777
    base.chmod(0o711)
    try:
        assert _connect_as(65534, str(socket_path)) == errno.EACCES
    finally:
        base.chmod(mode)


def _connect_as(uid: int, path: str) -> int:
    """connect(2) to the unix socket ``path`` as ``uid`` (in a child); 0 or the errno."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
        except OSError as exc:
            code = exc.errno or 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /exec/0123456789abcdef HTTP/1.1",
        b"POST /attach/../exec/x HTTP/1.1",
        b"GET /portforward/ HTTP/1.1",
        b"GET /exec/%00%ff HTTP/1.1",
        b"GET / HTTP/1.1",
        b"BREW /exec/x HTCPCP/1.0",
        b"GET /exec/" + b"A" * 20000 + b" HTTP/1.1",
    ],
)
def test_streaming_server_takes_only_valid_tokens(target: Target, request_line: bytes) -> None:
    url = target.node.cri.rt.Exec(
        api.ExecRequest(container_id=_running(target), cmd=["true"], stdout=True)
    ).url
    host, _, port = url.split("/")[2].partition(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            request_line + b"\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
        )
        reply = conn.recv(4096)
    assert reply.split(b" ")[1] in (b"400", b"404", b"405", b"431"), reply[:200]
    # The real token is still good: the garbage did not consume or break it.

    assert asyncio.run(exec_session(url)).exit_code == 0


def _running(target: Target) -> str:
    target.ensure()
    return target.running


def test_after_the_fuzz_crio_is_consistent(target: Target) -> None:
    assert target.calls > 0
    for (method, code), count in sorted(target.answers.items()):
        print(f"{method:26} {code:20} {count}")
    log = target.node.crio.log_text()
    assert "Traceback" not in log
    assert "failed with an unexpected error" not in log
    target.ensure()
    result = subprocess.run(target.node.crio.command("check"), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
