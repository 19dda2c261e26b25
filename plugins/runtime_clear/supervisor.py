"""The supervisor of one pod VM: qemu and its two virtiofsd, in a private mount namespace.

Run as ``python -I supervisor.py RUN_DIR/vm.json`` in its own session, so it
outlives a crio restart. Standard library only (it starts in ~30 ms). It

1. joins the pod's network namespace (``netns``), when there is one, and
   wires each of its interfaces to a tap: ``tc`` ingress filters redirect
   every frame from the CNI veth to the tap and back (``mirred``), and the
   guest NIC gets the veth's MAC; the addresses and routes it finds are
   written to ``network.json`` for the agent;
2. unshares its mount namespace (slave of the host's, so rootfs bind mounts
   made later under the share propagate in), binds ``/`` read-only onto
   ``RUN_DIR/root`` there, and serves it and the share with virtiofsd; the
   namespace and its mounts vanish with the supervisor;
3. starts qemu, waits for it, and on its death writes ``exit.json`` (status
   and reason), stops the virtiofsd, removes its taps and filters, and exits.

SIGTERM is the command to stop: qemu gets SIGTERM, then SIGKILL after
``kill_grace`` seconds. The supervisor's own exit status is 0 once exit.json
is written, whatever happened to the VM.

With a ``restore`` section the VM is restored from a template instead of
booted (see ``template.py`` and ``_restore.py``): the pod's RAM is a memfd
copy of the template's, and once qemu has loaded the saved devices the two
virtio-fs shares and the NICs (virtio-net PCI, on the taps) are hot-plugged
and the guest runs on.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _restore

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
#: How long qemu may take to follow a virtiofsd that exited before it is blamed.
DAEMON_GRACE = 1.0

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(path: str, kind: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, kind), f"setns {path}")
    finally:
        os.close(fd)


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(
        _libc.mount(
            None if source is None else source.encode(),
            target.encode(),
            None if fstype is None else fstype.encode(),
            ctypes.c_ulong(flags),
            None,
        ),
        f"mount {source} on {target}",
    )


def private_root(target: Path) -> None:
    """A mount namespace of our own with ``/`` bound read-only on ``target``."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_SLAVE)
    target.mkdir(exist_ok=True)
    mount("/", str(target), None, MS_BIND)
    mount(None, str(target), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _ip(*args: str) -> Any:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "[]")


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def wire_network(
    ports: list[str] | None = None,
) -> tuple[list[Any], dict[str, Any], list[tuple[str, str]]]:
    """Tap every ethernet interface of the current netns; return qemu args, facts, pairs.

    :param ports: a VM restored from a template: NIC number N is hot-plugged
        into PCIe root port ``ports[N]`` once the restore is done, so the
        first result is QMP commands (``netdev_add``, ``device_add``) instead
        of qemu arguments.
    """
    qemu_args: list[str] = []
    interfaces: list[dict[str, Any]] = []
    pairs: list[tuple[str, str]] = []
    links = [
        link
        for link in _ip("addr", "show")
        if link.get("link_type") == "ether" and not link["ifname"].startswith("crio-tap")
    ]
    if ports is not None and len(links) > len(ports):
        raise RuntimeError(
            f"the pod has {len(links)} interfaces; a VM from a template takes {len(ports)}"
        )
    for index, link in enumerate(links):
        dev, tap = link["ifname"], f"crio-tap{index}"
        _run("ip", "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
        pairs.append((dev, tap))
        _run("ip", "link", "set", "dev", tap, "mtu", str(link.get("mtu", 1500)), "up")
        for one, other in ((dev, tap), (tap, dev)):
            _run("tc", "qdisc", "add", "dev", one, "ingress")
            _run(
                "tc", "filter", "add", "dev", one, "parent", "ffff:", "protocol", "all",
                "u32", "match", "u8", "0", "0",
                "action", "mirred", "egress", "redirect", "dev", other,
            )  # fmt: skip
        addresses = [
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("scope") == "global" and a.get("family") in ("inet", "inet6")
        ]
        interface = {
            "name": dev, "mac": link["address"], "mtu": link.get("mtu"), "addresses": addresses
        }  # fmt: skip
        interfaces.append(interface)
        if ports is not None:
            netdev = {"type": "tap", "id": f"net{index}", "ifname": tap, "script": "no",
                      "downscript": "no"}  # fmt: skip
            device = {"driver": "virtio-net-pci", "id": f"nic{index}", "netdev": f"net{index}",
                      "mac": link["address"], "bus": ports[index]}  # fmt: skip
            qemu_args += [("netdev_add", netdev), ("device_add", device)]
            continue
        qemu_args += [
            "-netdev", f"tap,id=net{index},ifname={tap},script=no,downscript=no",
            "-device", f"virtio-net-device,netdev=net{index},mac={link['address']}",
        ]  # fmt: skip
    routes = []
    for family in ("-4", "-6"):
        for route in _ip(family, "route", "show"):
            if route.get("protocol") == "kernel" or route.get("dst", "").startswith("fe80"):
                continue
            routes.append({"dst": route["dst"], "gw": route.get("gateway", "")})
    return qemu_args, {"interfaces": interfaces, "routes": routes}, pairs


def unwire_network(pairs: list[tuple[str, str]]) -> None:
    for dev, tap in pairs:
        with contextlib.suppress(Exception):
            _run("ip", "link", "del", "dev", tap)
        with contextlib.suppress(Exception):
            _run("tc", "qdisc", "del", "dev", dev, "ingress")


def _wait_for_socket(
    path: Path, proc: subprocess.Popen[bytes], stopped: Any = lambda: "", timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if stopped():
            raise RuntimeError("stopped while starting")
        if proc.poll() is not None:
            raise RuntimeError(f"virtiofsd for {path.name} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"virtiofsd did not create {path} in {timeout}s")
        time.sleep(0.005)


def _virtiofsd(cfg: dict[str, Any], run: Path, tag: str, source: str, extra: list[str]) -> Any:
    sock = run / f"fs-{tag}.sock"
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    log = open(run / f"virtiofsd-{tag}.log", "ab")  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(
        [
            cfg["virtiofsd"],
            f"--socket-path={sock}",
            "-o", f"source={source}",
            "-o", "sandbox=namespace",
            "-o", "log_level=warn",
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        process_group=0,  # with its sandbox child: see Supervisor.finish
    )  # fmt: skip
    log.close()
    return proc


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def _reason(run: Path, status: int, stopped: str) -> str:
    if stopped:
        return stopped
    console = run / "console.log"
    with contextlib.suppress(OSError):
        text = console.read_text(errors="replace")
        at = text.find("Kernel panic")
        if at >= 0:
            return "guest kernel panic: " + text[at : at + 200].splitlines()[0]
        at = text.find("crio-init: ")
        if at >= 0:
            return "guest init failed: " + text[at:].splitlines()[0]
    if status == 0:
        return "the guest powered off"
    return f"qemu exited with status {status}: {_tail(run / 'qemu.log')}"


class Supervisor:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.run = Path(cfg["run_dir"])
        self.qemu: subprocess.Popen[bytes] | None = None
        self.daemons: dict[int, str] = {}
        self.stopped = ""
        self.pairs: list[tuple[str, str]] = []
        self.qemu_reaped = False
        self.started = time.monotonic()
        #: Seconds since the supervisor's start at each step (bench/vm.py prints them).
        self.figures: dict[str, float] = {}

    def mark(self, step: str) -> None:
        self.figures[step] = round(time.monotonic() - self.started, 4)

    def on_term(self, signum: int, frame: Any) -> None:
        self.stopped = self.stopped or "stopped on command"
        if self.qemu is not None and self.qemu.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.qemu.send_signal(signal.SIGTERM)
            signal.alarm(max(1, int(self.cfg.get("kill_grace", 5))))

    def on_alarm(self, signum: int, frame: Any) -> None:
        if self.qemu is not None and self.qemu.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.qemu.kill()

    def start(self) -> None:
        cfg, run = self.cfg, self.run
        restore = cfg.get("restore")
        qemu_argv = list(cfg["qemu"])
        if cfg.get("netns"):
            setns(cfg["netns"], CLONE_NEWNET)
            net_args, facts, self.pairs = wire_network(restore["nic_ports"] if restore else None)
            if restore:
                restore["hotplug"] = [*restore["hotplug"], *net_args]
            else:
                qemu_argv += net_args
            (run / "network.json").write_text(json.dumps(facts))
            self.mark("network")
        private_root(run / "root")
        root = _virtiofsd(cfg, run, "root", str(run / "root"), ["-o", "cache=always"])
        self.daemons[root.pid] = "root"
        share = _virtiofsd(
            cfg, run, "share", cfg["share_dir"], ["-o", "cache=auto", "-o", "announce_submounts"]
        )
        self.daemons[share.pid] = "share"
        self.mark("virtiofsd")
        if restore:
            self._restore(qemu_argv, restore, (root, share))
        else:
            _wait_for_socket(run / "fs-root.sock", root, lambda: self.stopped)
            _wait_for_socket(run / "fs-share.sock", share, lambda: self.stopped)
            self._spawn_qemu(qemu_argv)
        state = {
            "supervisor_pid": os.getpid(),
            "qemu_pid": self.qemu.pid if self.qemu else 0,
            "virtiofsd_pids": sorted(self.daemons),
            "figures": self.figures,
        }
        (run / "supervisor.json").write_text(json.dumps(state))

    def _spawn_qemu(self, argv: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        if self.stopped:
            raise RuntimeError("stopped while starting")
        with open(self.run / "qemu.log", "ab") as log:
            self.qemu = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=pass_fds
            )
        self.mark("qemu")

    def _restore(self, argv: list[str], restore: dict[str, Any], daemons: tuple[Any, Any]) -> None:
        """qemu waits for the saved state while its RAM is copied and the virtiofsd start."""
        size = int(restore["memory_bytes"])
        memfd = _restore.new_memory(size)
        try:
            token = restore["memory_token"]
            self._spawn_qemu([a.replace(token, f"/proc/self/fd/{memfd}") for a in argv], (memfd,))
            self.figures["memory_copied"] = _restore.fill_memory(memfd, restore["memory"], size)
            self.mark("memory")
        finally:
            os.close(memfd)
        _wait_for_socket(self.run / "fs-root.sock", daemons[0], lambda: self.stopped)
        _wait_for_socket(self.run / "fs-share.sock", daemons[1], lambda: self.stopped)
        self.mark("sockets")
        if self.stopped:
            raise RuntimeError("stopped while starting")
        _restore.incoming(
            str(self.run / "qmp.sock"),
            restore["state"],
            [(str(name), dict(args)) for name, args in restore["hotplug"]],
            float(restore.get("timeout", 60)),
            self.mark,
            lambda: not self.stopped and self.qemu is not None and self.qemu.poll() is None,
        )

    def wait(self) -> int:
        if self.qemu is None:
            return -1
        while True:
            # Reaped already: by _qemu_outlives, or by a Popen.poll() while restoring.
            if self.qemu_reaped or self.qemu.returncode is not None:
                return int(self.qemu.returncode or 0)
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return -1
            except InterruptedError:
                continue
            code = os.waitstatus_to_exitcode(status)
            if pid == self.qemu.pid:
                self.qemu.returncode = code
                return code
            tag = self.daemons.pop(pid, None)
            if tag is not None and not self.stopped and self._qemu_outlives(DAEMON_GRACE):
                self.stopped = f"virtiofsd for the {tag} share exited with status {code}"
                self.qemu.kill()

    def _qemu_outlives(self, grace: float) -> bool:
        """A virtiofsd also exits when qemu goes: was qemu's exit the cause?"""
        assert self.qemu is not None
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.qemu.pid, os.WNOHANG)
            if pid:
                self.qemu.returncode = os.waitstatus_to_exitcode(status)
                self.qemu_reaped = True
                return False
            time.sleep(0.01)
        return True

    def finish(self, status: int) -> None:
        # A virtiofsd that qemu never connected to (a restore stopped early)
        # sits in accept() and ignores SIGTERM: SIGKILL its group after a grace.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.daemons:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, sig)
            deadline = time.monotonic() + DAEMON_GRACE
            while self.daemons and time.monotonic() < deadline:
                for pid in list(self.daemons):
                    try:
                        if os.waitpid(pid, os.WNOHANG)[0]:
                            del self.daemons[pid]
                    except ChildProcessError:
                        del self.daemons[pid]
                time.sleep(0.01)
        unwire_network(self.pairs)
        exit_info = {
            "status": status,
            "reason": _reason(self.run, status, self.stopped),
            "finished_at": time.time_ns(),
        }
        tmp = self.run / "exit.json.tmp"
        tmp.write_text(json.dumps(exit_info))
        tmp.rename(self.run / "exit.json")


def main(argv: list[str]) -> int:
    cfg = json.loads(Path(argv[0]).read_text())
    supervisor = Supervisor(cfg)
    signal.signal(signal.SIGTERM, supervisor.on_term)
    signal.signal(signal.SIGINT, supervisor.on_term)
    signal.signal(signal.SIGALRM, supervisor.on_alarm)
    try:
        supervisor.start()
    except Exception as exc:
        supervisor.stopped = f"the VM could not start: {exc}"
        if supervisor.qemu is not None:
            supervisor.qemu.kill()
        supervisor.finish(supervisor.wait() if supervisor.qemu is not None else -1)
        return 0
    if supervisor.stopped and supervisor.qemu is not None:
        supervisor.on_term(signal.SIGTERM, None)  # asked to stop while starting
    supervisor.finish(supervisor.wait())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
