"""crictl's subcommands as the CRI calls they make, through crio's own client.

cri-tools is not installed here (Debian has no package and there is no
internet), so the README's crictl lines are replayed by this module: for
each subcommand it reads the same files, sends the same requests and prints
what crictl prints, after cri-tools' ``cmd/crictl`` (sandbox.go,
container.go, exec.go, info.go, util.go):

* files are crictl's JSON: CRI's field names, enums as numbers (Go's JSON
  decoder takes no names); a field CRI does not have is an error here (crictl
  would drop it without a word, which would hide a typo in the README);
* ``runp [-r|--runtime H] POD.json``: RunPodSandbox with
  ``runtime_handler=H`` (a missing ``metadata.uid`` gets a random one), prints the id;
* ``create POD CTR.json POD.json``: CreateContainer (no pull), prints the id;
* ``start ID...``, ``stopp ID...``, ``rmp ID...`` (``rmp`` refuses a ready pod, as crictl does);
* ``exec -s ID CMD...``: ExecSync; the command's exit status is crictl's;
  without ``-s`` crictl streams through Exec, which this replay does not do;
* ``pull IMAGE``: PullImage; ``info`` and ``inspectp ID...``: Status and
  PodSandboxStatus (verbose) as crictl's JSON, ``{"status": ..., KEY: info}``,
  or through ``-o go-template --template T`` (with kpod's Go template engine).

A failed call prints ``FATA[0000] WHAT: rpc error: code = Code desc = ...``
on stderr and exits 1, as crictl does on a terminal.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from crio.api import api_pb2 as api
from crio.api import api_pb2_grpc
from crio.kpod.gotemplate import Template

__all__ = ["Crictl", "go_code", "load_json"]

#: RunPodSandbox of a VM pod boots a VM: give it as long as crio's boot_timeout.
RPC_TIMEOUT = 600.0


class CrictlError(Exception):
    """What crictl would print as a fatal error (exit status 1 unless ``code`` says)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def go_code(code: grpc.StatusCode) -> str:
    """A code as grpc-go's ``codes.Code.String()`` writes it (InvalidArgument)."""
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"
    if code is grpc.StatusCode.OK:
        return "OK"
    return "".join(part.title() for part in code.name.split("_"))


def _numbers_for_enums(value: Any, descriptor: Descriptor, where: str) -> None:
    """Refuse enum names where crictl's Go decoder wants numbers."""
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        spec = descriptor.fields_by_name.get(key) or next(
            (f for f in descriptor.fields if f.json_name == key), None
        )
        if spec is None:
            continue  # json_format names the unknown field
        items = item if isinstance(item, list) else [item]
        if spec.type == FieldDescriptor.TYPE_ENUM and any(isinstance(v, str) for v in items):
            raise CrictlError(f"{where}: {key}: crictl takes the number of an enum, not its name")
        if spec.message_type is not None and not spec.message_type.GetOptions().map_entry:
            for sub in items:
                _numbers_for_enums(sub, spec.message_type, where)


def load_json(path: Path, message: Message) -> Message:
    """Read a crictl config file into ``message`` (see the module docstring)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CrictlError(f"load {path.name}: {exc}") from None
    _numbers_for_enums(data, message.DESCRIPTOR, path.name)
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise CrictlError(f"load {path.name}: {exc}") from None
    return message


def _status_json(status: Message) -> dict[str, Any]:
    return json_format.MessageToDict(status, always_print_fields_with_no_presence=True)


def _with_info(status: dict[str, Any], info: Any) -> dict[str, Any]:
    """crictl's ``outputStatusData``: the status, and each info value (JSON objects decoded)."""
    shown: dict[str, Any] = {"status": status}
    for key in sorted(info):
        value = info[key]
        shown[key] = json.loads(value) if value.startswith("{") else value.strip('"')
    return shown


class Crictl:
    """The subcommands above, for one crio socket; files are read relative to ``workdir``."""

    def __init__(self, channel: grpc.Channel, workdir: Path) -> None:
        self.rt = api_pb2_grpc.RuntimeServiceStub(channel)
        self.img = api_pb2_grpc.ImageServiceStub(channel)
        self.workdir = workdir
        self._commands: dict[str, Callable[[argparse.Namespace], str]] = {
            "info": self._info,
            "pull": self._pull,
            "runp": self._runp,
            "create": self._create,
            "start": self._start,
            "exec": self._exec,
            "inspectp": self._inspectp,
            "stopp": self._stopp,
            "rmp": self._rmp,
        }

    def run(self, args: Sequence[str]) -> tuple[int, str, str]:
        """Run ``crictl ARGS``; return (exit status, stdout, stderr)."""
        if not args or args[0] not in self._commands:
            known = ", ".join(self._commands)
            return 1, "", f"crictl replay: {args[:1]} is not a subcommand it knows ({known})\n"
        errors = io.StringIO()
        try:
            with redirect_stderr(errors):
                parsed = _parser(args[0]).parse_args(args[1:])
            return 0, self._commands[args[0]](parsed), ""
        except SystemExit:
            return 1, "", errors.getvalue()
        except CrictlError as exc:
            return exc.code, "", f"FATA[0000] {exc}\n"

    def _call(self, what: str, method: Callable[..., Any], request: Message) -> Any:
        try:
            return method(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            raise CrictlError(
                f"{what}: rpc error: code = {go_code(exc.code())} desc = {exc.details()}"
            ) from None

    def _render(self, shown: dict[str, Any], output: str, template: str) -> str:
        if output == "go-template":
            return Template(template).execute(shown) + "\n"
        if output in ("", "json"):
            return json.dumps(shown, indent=2) + "\n"
        raise CrictlError(f"unsupported format: {output!r}")

    def _info(self, args: argparse.Namespace) -> str:
        request = api.StatusRequest(verbose=True)
        reply = self._call("getting status of runtime", self.rt.Status, request)
        shown = _with_info(_status_json(reply.status), reply.info)
        return self._render(shown, args.output, args.template)

    def _pull(self, args: argparse.Namespace) -> str:
        request = api.PullImageRequest(image=api.ImageSpec(image=args.image))
        reply = self._call("pulling image", self.img.PullImage, request)
        return f"Image is up to date for {reply.image_ref}\n"

    def _runp(self, args: argparse.Namespace) -> str:
        config = load_json(self.workdir / args.config, api.PodSandboxConfig())
        assert isinstance(config, api.PodSandboxConfig)
        if not config.metadata.uid:
            config.metadata.uid = str(uuid.uuid4())
        if not config.metadata.name or not config.metadata.namespace:
            raise CrictlError("load podSandboxConfig: name or namespace is not in metadata")
        request = api.RunPodSandboxRequest(config=config, runtime_handler=args.runtime)
        return self._call("run pod sandbox", self.rt.RunPodSandbox, request).pod_sandbox_id + "\n"

    def _create(self, args: argparse.Namespace) -> str:
        container = load_json(self.workdir / args.container_config, api.ContainerConfig())
        sandbox = load_json(self.workdir / args.pod_config, api.PodSandboxConfig())
        request = api.CreateContainerRequest(
            pod_sandbox_id=args.pod, config=container, sandbox_config=sandbox
        )
        reply = self._call("creating container", self.rt.CreateContainer, request)
        return reply.container_id + "\n"

    def _start(self, args: argparse.Namespace) -> str:
        out = []
        for cid in args.ids:
            self._call("starting the container", self.rt.StartContainer,
                       api.StartContainerRequest(container_id=cid))  # fmt: skip
            out.append(cid + "\n")
        return "".join(out)

    def _exec(self, args: argparse.Namespace) -> str:
        if not args.sync:
            raise CrictlError("the crictl replay runs exec with -s (ExecSync) only")
        request = api.ExecSyncRequest(container_id=args.id, cmd=args.cmd, timeout=args.timeout)
        reply = self._call(f"execing command in container {args.id} synchronously",
                           self.rt.ExecSync, request)  # fmt: skip
        if reply.exit_code:
            raise CrictlError("non-zero exit code", code=reply.exit_code)
        return reply.stdout.decode(errors="replace")

    def _inspectp(self, args: argparse.Namespace) -> str:
        shown = []
        for pod_id in args.ids:
            request = api.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
            reply = self._call("get pod sandbox status", self.rt.PodSandboxStatus, request)
            status = _status_json(reply.status)
            status["createdAt"] = _rfc3339(reply.status.created_at)
            shown.append(_with_info(status, reply.info))
        return self._render(shown[0] if len(shown) == 1 else shown, args.output, args.template)

    def _stopp(self, args: argparse.Namespace) -> str:
        for pod_id in args.ids:
            self._call(f'stopping the pod sandbox "{pod_id}"', self.rt.StopPodSandbox,
                       api.StopPodSandboxRequest(pod_sandbox_id=pod_id))  # fmt: skip
        return "".join(f"Stopped sandbox {pod_id}\n" for pod_id in args.ids)

    def _rmp(self, args: argparse.Namespace) -> str:
        for pod_id in args.ids:
            request = api.PodSandboxStatusRequest(pod_sandbox_id=pod_id)
            what = f'getting sandbox status of pod "{pod_id}"'
            status = self._call(what, self.rt.PodSandboxStatus, request).status
            if status.state == api.SANDBOX_READY:
                raise CrictlError(f'pod sandbox "{pod_id}" is running, please stop it first')
            self._call(f'removing the pod sandbox "{pod_id}"', self.rt.RemovePodSandbox,
                       api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))  # fmt: skip
        return "".join(f"Removed sandbox {pod_id}\n" for pod_id in args.ids)


def _rfc3339(nanoseconds: int) -> str:
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{rest:09d}".rstrip("0").rstrip(".") + "Z"


def _parser(subcommand: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"crictl {subcommand}")
    if subcommand in ("info", "inspectp"):
        parser.add_argument("-o", "--output", default="")
        parser.add_argument("--template", default="")
    if subcommand == "pull":
        parser.add_argument("image")
    elif subcommand == "runp":
        parser.add_argument("-r", "--runtime", default="")
        parser.add_argument("config")
    elif subcommand == "create":
        parser.add_argument("pod")
        parser.add_argument("container_config")
        parser.add_argument("pod_config")
    elif subcommand == "exec":
        parser.add_argument("-s", "--sync", action="store_true")
        parser.add_argument("--timeout", type=int, default=0)
        parser.add_argument("id")
        parser.add_argument("cmd", nargs=argparse.REMAINDER)
    elif subcommand != "info":
        parser.add_argument("ids", nargs="+")
    return parser
