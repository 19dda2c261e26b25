"""The README's examples, run against a real crio, so that the docs cannot drift from the code.

A block of README.md is an example when ``<!-- example: NAME -->`` stands on
the line right before its opening fence (``tests/support/readme.py`` says
how markers are read and how shell blocks are replayed). Every example runs
here, and the last test fails if one was not: a block that stops working,
or a new block nobody runs, fails the suite.

What each kind of block gets:

* configuration drop-ins (``*.conf``): loaded by crio's own loader
  (:func:`crio.config.load`), and a real crio or kpod starts with them: the
  module's crio with ``10-storage.conf``, ``10-imagestores.conf``,
  ``50-clear.conf`` and ``60-trust.conf``; kpod with ``20-copydir.conf``;
* crictl's JSON files: read by the crictl replay (:mod:`support.crictl`,
  crio's own CRI client) when a script names them;
* ``runtimeclass.yaml``: parsed; its handler must be a ``vm`` handler of the
  loaded configuration, and its Pod the same pod as the crictl files;
* the plugin's files: built and installed by the ``plugin-install`` script
  (pip into a private site directory on every command's PYTHONPATH); the
  module's crio loads the plugin and its event hook logs every pod;
* scripts: replayed, with what their ``# =>`` and ``# fails:`` comments say.

Where this differs from a node after ``make run``, and why:

* everything crio writes is private (root, runroot, state, sockets, the
  runtime roots of every handler, the VM handler's too): the node's default
  paths are shared by every test run on this machine;
* ``ROOT/vm-assets`` links to the assets the VM tests use, so ``crio
  vm-assets`` finds them current instead of downloading a kernel, and the
  VM handler keeps its templates where the VM tests keep theirs;
* there is no internet: a local docker-registry holds busybox, and a private
  registries.conf sends ``docker.io`` to it;
* the pods' network is a private CNI bridge;
* the annotated pod of ``untrusted-pod.json`` is routed by crio's own
  :func:`crio.server.sandbox_run.choose_handler` with the configuration the
  loader read, not by booting a second VM: the module boots one pod VM.

Time: one crio and one pod VM for the module. The walk-through that boots
the VM (``mixed-pods``) is replayed in a thread from the fixture on, while
the tests that need no VM run.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import yaml

from crio import config as crio_config
from crio.api import api_pb2 as api
from crio.server.sandbox_run import choose_handler
from crio_plugins.runtime_clear.options import parse_options
from support.cni import CNIEnv
from support.crictl import Crictl, load_json
from support.daemon import CrioProcess
from support.images import busybox_rootfs_tar, write_oci_layout
from support.readme import README, Block, Node, Replay, parse_blocks, write_files
from support.registry import Registry, skopeo_push
from support.vm import templates_dir, vm_assets_or_skip

pytestmark = pytest.mark.slow

#: The drop-ins the module's crio starts with (the README's, as an operator adds them).
NODE_DROP_INS = ("10-storage.conf", "10-imagestores.conf", "50-clear.conf", "60-trust.conf")


@dataclass
class Docs:
    """The README's examples and the crio they run against."""

    blocks: dict[str, Block]
    workdir: Path
    crio: CrioProcess
    node: Node
    release: str  # the guest kernel's
    vm_roots: list[Path]
    used: set[str] = field(default_factory=set)
    plugin: Replay | None = None
    plugin_error: BaseException | None = None
    mixed: Replay | None = None
    mixed_error: BaseException | None = None
    mixed_thread: threading.Thread | None = None

    def block(self, name: str) -> Block:
        assert name in self.blocks, f"README.md has no block marked 'example: {name}'"
        self.used.add(name)
        return self.blocks[name]

    def replay(self, name: str, node: Node | None = None) -> Replay:
        replay = Replay(node or self.node)
        replay.run(self.block(name))
        return replay

    def wait_mixed(self) -> Replay:
        assert self.mixed_thread is not None
        self.mixed_thread.join(timeout=900)
        assert not self.mixed_thread.is_alive(), "the mixed-pods walk-through never ended"
        if self.mixed_error is not None:
            raise self.mixed_error
        assert self.mixed is not None
        return self.mixed

    def scratch(self, *drop_ins: str) -> Node:
        """A node config with a fresh store and no daemon, plus README drop-ins."""
        base = Path(tempfile.mkdtemp(prefix="scratch-", dir=self.workdir))
        conf_dir = base / "conf.d"
        conf_dir.mkdir()
        for name in drop_ins:
            shutil.copy(self.workdir / name, conf_dir / name)
        main = base / "crio.conf"
        main.write_text(
            f'[crio]\nroot = "{base}/root"\nrunroot = "{base}/run"\n'
            f'state_dir = "{base}/state"\nversion_file = "{base}/version"\n'
            f'log_dir = "{base}/logs"\n[crio.api]\nlisten = "{base}/crio.sock"\n'
        )
        return Node(main, conf_dir, self.workdir, self.node.site)


def _vm_handlers(text: str) -> list[str]:
    tables = tomllib.loads(text).get("crio", {}).get("runtime", {}).get("runtimes", {})
    return [name for name, table in tables.items() if table.get("runtime_type") == "vm"]


def _registry_with_busybox(base: Path) -> Registry:
    registry = Registry(base=base / "registry")
    registry.start()
    layout = write_oci_layout(base / "busybox-oci", [busybox_rootfs_tar()])
    skopeo_push(f"oci:{layout.path}:latest", registry, "library/busybox:latest")
    return registry


def _node_tables(base: Path, registry: Registry, vm_roots: list[Path]) -> dict[str, dict]:
    (base / "registries.conf").write_text(
        f'[[registry]]\nprefix = "docker.io"\nlocation = "{registry.host}"\ninsecure = true\n'
    )
    (base / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    tables: dict[str, dict] = {
        "crio.image": {
            "registries_conf": str(base / "registries.conf"),
            "signature_policy": str(base / "policy.json"),
        }
    }
    for root in vm_roots:
        # The VM tests' shared templates: the first module to need one builds it.
        private = {"runtime_root": str(root), "template_dir": str(templates_dir())}
        tables[f"crio.runtime.runtimes.{root.name}"] = private
    return tables


def _replay_mixed(docs: Docs) -> None:
    try:
        docs.mixed = Replay(docs.node)
        docs.mixed.run(docs.block("mixed-pods"))
    except BaseException as exc:  # handed to the test that waits for it
        docs.mixed_error = exc


@pytest.fixture(scope="module")
def docs() -> Iterator[Docs]:
    assets = vm_assets_or_skip()
    for tool in ("/usr/lib/cni/bridge", "/usr/bin/skopeo", "/usr/bin/docker-registry"):
        if not Path(tool).exists():
            pytest.skip(f"{tool} is not installed")
    blocks = parse_blocks(README.read_text())
    workdir = Path(tempfile.mkdtemp(prefix="crio-readme-", dir="/var/tmp"))
    write_files(blocks, workdir)
    vm_roots = [
        Path(tempfile.mkdtemp(prefix="vmr-", dir="/tmp")) / name
        for name in _vm_handlers(blocks["50-clear.conf"].text)
    ]
    registry = _registry_with_busybox(workdir)
    crio = CrioProcess(lambda base: _node_tables(workdir, registry, vm_roots))
    cni = CNIEnv(crio.base / "cni")
    cni.net_dir = crio.base / "net.d"
    cni.write(cni.conflist(portmap=False))
    for name in NODE_DROP_INS:
        shutil.copy(workdir / name, crio.base / name)
    (crio.base / "root").mkdir()
    (crio.base / "root" / "vm-assets").symlink_to(assets.directory)
    node = Node(crio.config, crio.base, workdir, workdir / "site")
    docs = Docs(blocks, workdir, crio, node, assets.kernel_release, vm_roots)
    channel = None
    try:
        # The plugin goes in before crio starts, so that crio loads it.
        try:
            docs.plugin = docs.replay("plugin-install")
        except BaseException as exc:
            docs.plugin_error = exc
        crio.start(env=node.env(), timeout=120)
        channel = grpc.insecure_channel(f"unix://{crio.socket}")
        node.crictl = Crictl(channel, workdir)
        docs.mixed_thread = threading.Thread(target=_replay_mixed, args=(docs,), daemon=True)
        docs.mixed_thread.start()
        yield docs
    finally:
        if docs.mixed_thread is not None:
            docs.mixed_thread.join(timeout=900)
        try:
            if crio.proc is not None and crio.proc.poll() is None:
                with crio.channel() as ch:
                    pods = api.ListPodSandboxRequest()
                    ids = [p.id for p in crio.runtime_stub(ch).ListPodSandbox(pods).items]
                cni.container_ids.extend(ids)
                crio.remove_pods()
            if channel is not None:
                channel.close()
            crio.stop()
        finally:
            crio.cleanup()
            cni.cleanup()
            registry.cleanup()
            for root in vm_roots:
                leftovers = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                             if str(root) in line]  # fmt: skip
                shutil.rmtree(root.parent, ignore_errors=True)
                assert not leftovers, leftovers
            shutil.rmtree(workdir, ignore_errors=True)


# -- configuration ----------------------------------------------------------------------


def _leaves(table: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def test_every_drop_in_loads_with_crios_own_loader(docs: Docs, tmp_path: Path) -> None:
    """Each drop-in, added in the README's order to those before it (the trust
    settings name the VM handler), loads, and every key it sets has its value."""
    main = tmp_path / "crio.conf"
    main.write_text("")
    conf = [name for name in docs.blocks if name.endswith(".conf")]
    assert set(NODE_DROP_INS) | {"20-copydir.conf"} <= set(conf)
    growing = tmp_path / "drop-ins"
    growing.mkdir()
    for name in conf:
        block = docs.block(name)
        shutil.copy(docs.workdir / name, growing / name)
        loaded = crio_config.load(str(main), str(growing))  # raises ConfigError naming the key
        dumped = loaded.model_dump()
        for path, value in _leaves(tomllib.loads(block.text)):
            got: object = dumped
            for part in path:
                got = got[part]  # type: ignore[index]
            assert got == value, (name, ".".join(path))
            assert loaded.origin(".".join(path)) == str(growing / name)
        for handler_name, handler in loaded.crio.runtime.runtimes.items():
            if handler.runtime_type == "vm":  # the plugin's own keys, as crio checks them
                parse_options(handler_name, handler.options, handler.runtime_path)


def test_the_node_crio_started_with_the_readme_drop_ins(docs: Docs) -> None:
    log = docs.crio.log_text()
    assert "with driver overlay" in log
    assert "runtime handler clear ready (runtime_type vm)" in log
    ready = docs.replay("storage-info")  # kpod on the running node's store
    assert ready.outcomes[0].stdout.strip() == "overlay"


def test_drivers_this_host_cannot_run_are_refused_by_name(docs: Docs) -> None:
    from support.contract import kernel_has

    scratch = docs.scratch()
    misc = Path("/proc/misc").read_text().splitlines()
    dm = any(line.split()[-1:] == ["device-mapper"] for line in misc)
    if kernel_has("aufs") or dm or _fs_type(str(scratch.workdir)) != "ext4":
        pytest.skip("the README's probes describe a host without aufs or device-mapper, on ext4")
    docs.replay("driver-probes", scratch)


def _fs_type(path: str) -> str:
    best, kind = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, point, fstype = line.split()[:3]
        if path.startswith(point) and len(point) > len(best):
            best, kind = point, fstype
    return kind


# -- writing a plugin ---------------------------------------------------------------


def test_the_vendor_plugin_is_built_installed_and_found(docs: Docs) -> None:
    if docs.plugin_error is not None:
        raise docs.plugin_error
    assert docs.plugin is not None
    for name in ("crio-copydir/pyproject.toml", "crio-copydir/crio_copydir/__init__.py"):
        docs.block(name)
    installed = sorted(p.name for p in docs.node.site.iterdir())
    assert "crio_copydir" in installed and "crio_copydir-0.1.0.dist-info" in installed
    # kpod opens a store with the vendor's driver, as crio does at start.
    docs.block("20-copydir.conf")
    docs.replay("copydir-info", docs.scratch("20-copydir.conf"))


def test_the_contract_suite_runs_against_the_vendor_driver(docs: Docs) -> None:
    if docs.plugin_error is not None:
        pytest.fail("the plugin was not installed (see the previous test)")
    done = docs.replay("plugin-contract").outcomes[0]
    assert "--driver" in done.argv and "copydir" in done.argv


def test_vm_assets_are_current(docs: Docs) -> None:
    done = docs.replay("vm-assets").outcomes[0]
    assert f"release {docs.release} " in done.stdout
    assert "are current" in done.stdout


def test_the_runtimeclass_names_a_vm_handler_and_matches_the_crictl_files(docs: Docs) -> None:
    runtime_class, pod = yaml.safe_load_all(docs.block("runtimeclass.yaml").text)
    kind = (runtime_class["apiVersion"], runtime_class["kind"])
    assert kind == ("node.k8s.io/v1", "RuntimeClass")
    loaded = crio_config.load(str(docs.crio.config), str(docs.crio.base))
    handler = loaded.crio.runtime.runtimes[runtime_class["handler"]]
    assert handler.runtime_type == "vm"
    memory = parse_options(runtime_class["handler"], handler.options).memory
    assert runtime_class["overhead"]["podFixed"]["memory"] == f"{memory}Mi"
    assert pod["spec"]["runtimeClassName"] == runtime_class["metadata"]["name"]
    ctr = load_json(docs.workdir / docs.block("sleep.json").name, api.ContainerConfig())
    vm_pod = load_json(docs.workdir / docs.block("vm-pod.json").name, api.PodSandboxConfig())
    (container,) = pod["spec"]["containers"]
    assert (container["name"], container["image"]) == (ctr.metadata.name, ctr.image.image)
    assert container["command"] == list(ctr.command)
    assert pod["metadata"]["name"] == vm_pod.metadata.name


# -- mixed workloads -------------------------------------------------------------------


def test_a_vm_pod_runs_beside_a_runc_pod(docs: Docs) -> None:
    docs.block("web-pod.json")
    mixed = docs.wait_mixed()
    v = mixed.variables
    status = docs.node.crictl.rt.PodSandboxStatus  # type: ignore[union-attr]
    handlers = {
        pod: status(api.PodSandboxStatusRequest(pod_sandbox_id=v[pod])).status.runtime_handler
        for pod in ("WEB_POD", "VM_POD")
    }
    assert handlers == {"WEB_POD": "runc", "VM_POD": "clear"}
    node_kernel = mixed.output("uname -r").strip()
    assert node_kernel == platform.release()
    assert mixed.output("crictl exec -s $WEB_CTR uname -r").strip() == node_kernel
    guest = mixed.output("crictl exec -s $VM_CTR uname -r").strip()
    assert guest == docs.release != node_kernel
    # The vendor plugin's event hook saw both pods, with their handlers.
    log = docs.crio.log_text()
    assert "crio_copydir: pod default/web is up on handler runc" in log
    assert "crio_copydir: pod default/sandboxed is up on handler clear" in log
    # The shared image store of 10-imagestores.conf is missing here: logged, not fatal.
    assert "read-only image store /mnt/images is unusable" in log


def test_which_handler_runs_a_pod(docs: Docs) -> None:
    mixed = docs.wait_mixed()
    mixed.run(docs.block("which-handler"))


def test_the_2017_trust_rules(docs: Docs) -> None:
    mixed = docs.wait_mixed()
    mixed.run(docs.block("trust"))
    loaded = crio_config.load(str(docs.crio.config), str(docs.crio.base))
    runtime = loaded.crio.runtime
    untrusted = load_json(docs.workdir / docs.block("untrusted-pod.json").name,
                          api.PodSandboxConfig())  # fmt: skip
    assert choose_handler(runtime, "", untrusted.annotations, False) == "clear"
    node_pod = load_json(docs.workdir / docs.block("node-pod.json").name, api.PodSandboxConfig())
    assert node_pod.annotations == untrusted.annotations
    assert choose_handler(runtime, "", node_pod.annotations, True) == "runc"


def test_cleanup_leaves_nothing(docs: Docs) -> None:
    mixed = docs.wait_mixed()
    started = time.monotonic()
    mixed.run(docs.block("cleanup"))
    with docs.crio.channel() as channel:
        pods = docs.crio.runtime_stub(channel).ListPodSandbox(api.ListPodSandboxRequest()).items
    assert list(pods) == []
    for root in docs.vm_roots:
        assert not list(root.glob("*")), f"a VM directory was left in {root}"
    pod_ids = [mixed.variables["WEB_POD"], mixed.variables["VM_POD"]]
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for pod_id in pod_ids:
            assert not (hierarchy / "crio" / f"pod-{pod_id}").exists()
    print(f"\ncleanup of both pods: {time.monotonic() - started:.1f}s")


def test_every_example_ran(docs: Docs) -> None:
    """Last: a block marked as an example that no test ran fails here."""
    assert set(docs.blocks) - docs.used == set()
