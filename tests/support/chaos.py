"""The kill-restart harness: churn pods and containers through a real crio, SIGKILL it, check.

Worker threads run random CRI calls (RunPodSandbox with host or bridge
networking, CreateContainer, StartContainer, ExecSync, StopContainer,
RemoveContainer, StopPodSandbox, RemovePodSandbox, PullImage, RemoveImage)
on up to ``max_pods`` pods. A model keeps what crio acknowledged; each
object is worked on by one worker at a time, so that the model is exact. At
random instants crio is killed with SIGKILL; calls in flight then have an
unknown outcome and their objects are marked uncertain. crio is restarted,
and the listing is checked against the model:

* lost: an acknowledged pod or container that is not listed, or is listed
  in a state its acknowledged history excludes;
* resurrected: one whose removal was acknowledged and that is listed again;
* ghosts: a listed object nobody asked for;
* unexpected errors: calls that failed while crio was up with a code other
  than the expected ones, and tracebacks in crio's log.

At the end everything is removed through CRI, crio is stopped, and the
host is searched for what this run left (:func:`support.chaos_env.leftovers`).
"""

from __future__ import annotations

import concurrent.futures
import random
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from crio.api import api_pb2 as api
from crio.api import api_pb2_grpc
from support.cni import CNIEnv
from support.cri import BUSYBOX_IMAGE, container_config, pod_config, seed_images
from support.daemon import CrioProcess

__all__ = ["PULL_IMAGE", "Chaos", "Counts"]

#: The image PullImage fetches from the run's registry (pushed by the caller).
PULL_IMAGE = "chaos/small:v1"

#: Codes a call may fail with while crio is up, for reasons the model allows.
EXPECTED = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
}
#: Codes of a call that was cut off by the kill.
CUT_OFF = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
           grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}  # fmt: skip

COMMANDS = (
    ["sleep", "3600"],
    ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
    ["sh", "-c", "exit 3"],
)


#: How long the churn may go without one acknowledged call before it counts as stalled.
PROGRESS_DEADLINE = 300.0


@dataclass
class Counts:
    kills: int = 0
    operations: int = 0
    acknowledged: int = 0
    failed: int = 0
    cut_off: int = 0
    lost: int = 0
    resurrected: int = 0
    ghosts: int = 0
    leaked: int = 0
    unexpected: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"kills {self.kills}, operations {self.operations} "
            f"(acknowledged {self.acknowledged}, failed {self.failed}, cut off {self.cut_off}), "
            f"lost {self.lost}, resurrected {self.resurrected}, ghosts {self.ghosts}, "
            f"leaked {self.leaked}, unexpected errors {self.unexpected}"
        )


@dataclass
class Pod:
    pod_id: str
    uid: str
    ready: bool = True
    uncertain: bool = False
    busy: bool = False
    #: Its containers share its PID namespace (a pause process holds it).
    shared_pid: bool = False


@dataclass
class Ctr:
    cid: str
    pod_id: str
    name: str
    state: str = "created"  # created | running | exited
    uncertain: bool = False
    busy: bool = False


class Chaos:
    """One crio under churn; see the module docstring."""

    def __init__(
        self, crio: CrioProcess, cni: CNIEnv, cgroup_root: str, *, max_pods: int = 50,
        workers: int = 6, seed: int | None = None, registry_host: str = "",
        check_every: int = 0, check: Callable[[], tuple[int, str]] | None = None,
    ) -> None:  # fmt: skip
        self.crio = crio
        self.cni = cni
        self.cgroup_root = cgroup_root
        self.max_pods = max_pods
        self.workers = workers
        self.random = random.Random(seed)
        self.registry_host = registry_host
        #: Every ``check_every`` kills, ``check()`` (``crio check``) must find nothing.
        self.check_every = check_every
        self.check = check
        self.counts = Counts()
        #: How long each restart took until crio served (restore and repair included).
        self.restart_seconds: list[float] = []
        self.pods: dict[str, Pod] = {}
        self.ctrs: dict[str, Ctr] = {}
        self.removed: set[str] = set()
        #: (pod uid) of RunPodSandbox calls cut off; (pod id, name) of CreateContainer ones.
        self.maybe_pods: set[str] = set()
        #: Uids of those pods whose containers share the pod's PID namespace.
        self.maybe_shared_pid: set[str] = set()
        self.maybe_ctrs: set[tuple[str, str]] = set()
        self.ever: set[str] = set()
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._stop = threading.Event()
        self._inflight = 0
        self._channel: grpc.Channel | None = None
        self.rt: Any = None
        self.img: Any = None
        self._log_offset = 0

    # -- crio -----------------------------------------------------------------

    def start(self) -> None:
        self.cni.write(self.cni.conflist(portmap=False))
        seed_images(self.crio.base / "root", self.crio.base / "runroot")
        self.crio.start()
        self._connect()
        self._up.set()

    def _connect(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = grpc.insecure_channel(f"unix://{self.crio.socket}")
        self.rt = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self.img = api_pb2_grpc.ImageServiceStub(self._channel)

    def kill_and_restart(self) -> None:
        """SIGKILL crio with calls in flight, wait for them to fail, start it, check it."""
        self._up.clear()
        assert self.crio.proc is not None
        self.crio.proc.send_signal(signal.SIGKILL)
        self.crio.proc.wait()
        self.counts.kills += 1
        while True:
            with self._lock:
                if self._inflight == 0:
                    break
            time.sleep(0.01)
        started = time.monotonic()
        self.crio.start()
        self.restart_seconds.append(time.monotonic() - started)
        self._connect()
        self.validate()
        if (
            self.check is not None
            and self.check_every
            and self.counts.kills % self.check_every == 0
        ):
            code, report = self.check()
            if code != 0:
                self._problem("unexpected", f"crio check after kill {self.counts.kills}: {report}")
        self._up.set()

    # -- churn ------------------------------------------------------------------

    def run(
        self,
        kills: int,
        between: tuple[float, float] = (0.5, 2.0),
        acknowledged_between: int = 0,
    ) -> Counts:
        """Churn, and SIGKILL crio ``kills`` times.

        :param between: the random pause before each kill, in seconds.
        :param acknowledged_between: also wait, before each kill, until this many more
            calls were acknowledged since the last restart, so that the churn does
            work between kills however loaded the machine is. A restarted crio that
            acknowledges nothing for ``PROGRESS_DEADLINE`` seconds is a problem.
        """
        threads = [
            threading.Thread(target=self._worker, name=f"chaos-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        try:
            for _ in range(kills):
                before = self.counts.acknowledged
                time.sleep(self.random.uniform(*between))
                if not self._wait_progress(before + acknowledged_between):
                    break
                self.kill_and_restart()
        finally:
            self._stop.set()
            self._up.set()
            for thread in threads:
                thread.join(120)
        return self.counts

    def _wait_progress(self, acknowledged: int) -> bool:
        """Wait until ``acknowledged`` calls in all were acknowledged; False on a stall."""
        deadline = time.monotonic() + PROGRESS_DEADLINE
        while self.counts.acknowledged < acknowledged:
            if time.monotonic() > deadline:
                self._problem(
                    "unexpected",
                    f"no progress: {self.counts.acknowledged} calls acknowledged, waited "
                    f"{PROGRESS_DEADLINE:g}s for {acknowledged} (kill {self.counts.kills})",
                )
                return False
            time.sleep(0.01)
        return True

    def _worker(self) -> None:
        rng = random.Random(self.random.random())
        while not self._stop.is_set():
            self._up.wait()
            if self._stop.is_set():
                return
            with self._lock:
                if not self._up.is_set():
                    continue
                op = self._pick(rng)
                if op is None:
                    pass
                else:
                    self._inflight += 1
            if op is None:
                time.sleep(0.01)
                continue
            try:
                op()
            finally:
                with self._lock:
                    self._inflight -= 1

    def _pick(self, rng: random.Random) -> Callable[[], None] | None:
        """Choose an operation and claim its objects (model lock held)."""
        free_pods = [p for p in self.pods.values() if not p.busy]
        ready = [p for p in free_pods if p.ready]
        free = [c for c in self.ctrs.values() if not c.busy and not self.pods[c.pod_id].busy]
        choices: list[tuple[float, Callable[[], Callable[[], None] | None]]] = []
        if len(self.pods) < self.max_pods:
            choices.append((4.0, lambda: self._op_run_pod(rng)))
        if ready:
            choices.append((5.0, lambda: self._op_create(rng, rng.choice(ready))))
        created = [c for c in free if c.state == "created" and self.pods[c.pod_id].ready]
        if created:
            choices.append((4.0, lambda: self._op_start(rng.choice(created))))
        running = [c for c in free if c.state == "running"]
        if running:
            choices.append((3.0, lambda: self._op_exec(rng.choice(running))))
            choices.append((1.5, lambda: self._op_stop(rng.choice(running))))
        if free:
            choices.append((1.5, lambda: self._op_remove(rng.choice(free))))
        idle = [p for p in free_pods if not any(c.busy for c in self._of(p.pod_id))]
        if idle:
            crowd = 3.0 if len(self.pods) >= self.max_pods * 0.8 else 0.7
            choices.append((crowd, lambda: self._op_stop_pod(rng.choice(idle))))
            choices.append((crowd, lambda: self._op_remove_pod(rng.choice(idle))))
        if self.registry_host:
            choices.append((0.6, lambda: self._op_pull(rng)))
        if not choices:
            return None
        total = sum(w for w, _ in choices)
        pick = rng.uniform(0, total)
        for weight, make in choices:
            pick -= weight
            if pick <= 0:
                return make()
        return choices[-1][1]()

    def _of(self, pod_id: str) -> list[Ctr]:
        return [c for c in self.ctrs.values() if c.pod_id == pod_id]

    def _call(self, method: Any, request: Any, timeout: float = 60) -> Any:
        """Call; returns the reply, or the RpcError's code (a cut-off call: None)."""
        try:
            reply = method(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            if not self._up.is_set() and code in CUT_OFF:
                self._bump("cut_off")
                return None
            self._bump("failed")
            if code not in EXPECTED:
                self._problem(
                    "unexpected", f"{type(request).__name__}: {code.name}: {exc.details()}"
                )
            return code
        self._bump("acknowledged")
        return reply

    def _bump(self, kind: str) -> None:
        with self._lock:
            self.counts.operations += 1
            setattr(self.counts, kind, getattr(self.counts, kind) + 1)

    def _problem(self, kind: str, text: str) -> None:
        with self._lock:
            setattr(self.counts, kind, getattr(self.counts, kind) + 1)
            self.counts.problems.append(f"{kind}: {text}")

    # -- operations (each claims its objects in _pick, releases them when done) --

    def _op_run_pod(self, rng: random.Random) -> Callable[[], None]:
        bridge = rng.random() < 0.5
        shared_pid = rng.random() < 0.3
        config = pod_config(host_network=not bridge, pid=api.POD if shared_pid else api.CONTAINER)
        config.linux.cgroup_parent = f"{self.cgroup_root}/pod-{config.metadata.uid}"
        config.log_directory = str(self.crio.base / "pods" / config.metadata.uid)
        uid = config.metadata.uid

        def run() -> None:
            reply = self._call(self.rt.RunPodSandbox, api.RunPodSandboxRequest(config=config))
            with self._lock:
                if reply is None:
                    self.maybe_pods.add(uid)
                    if shared_pid:
                        self.maybe_shared_pid.add(uid)
                elif not isinstance(reply, grpc.StatusCode):
                    self.pods[reply.pod_sandbox_id] = Pod(
                        reply.pod_sandbox_id, uid, shared_pid=shared_pid
                    )
                    self.ever.add(reply.pod_sandbox_id)

        return run

    def _op_create(self, rng: random.Random, pod: Pod) -> Callable[[], None]:
        pod.busy = True
        name = f"c{secrets.token_hex(3)}"
        pid = api.POD if pod.shared_pid else api.CONTAINER
        config = container_config(name, rng.choice(COMMANDS), image=BUSYBOX_IMAGE, pid=pid)

        def run() -> None:
            request = api.CreateContainerRequest(pod_sandbox_id=pod.pod_id, config=config)
            reply = self._call(self.rt.CreateContainer, request)
            with self._lock:
                pod.busy = False
                if reply is None:
                    self.maybe_ctrs.add((pod.pod_id, name))
                elif not isinstance(reply, grpc.StatusCode):
                    self.ctrs[reply.container_id] = Ctr(reply.container_id, pod.pod_id, name)
                    self.ever.add(reply.container_id)

        return run

    def _ctr_op(self, ctr: Ctr, call: Callable[[], Any], done: Callable[[Any], None]) -> Any:
        ctr.busy = True

        def run() -> None:
            reply = call()
            with self._lock:
                ctr.busy = False
                if reply is None:
                    ctr.uncertain = True
                elif not isinstance(reply, grpc.StatusCode):
                    done(reply)

        return run

    def _op_start(self, ctr: Ctr) -> Callable[[], None]:
        request = api.StartContainerRequest(container_id=ctr.cid)
        return self._ctr_op(
            ctr, lambda: self._call(self.rt.StartContainer, request), lambda _: _set(ctr, "running")
        )

    def _op_exec(self, ctr: Ctr) -> Callable[[], None]:
        word = secrets.token_hex(4)
        request = api.ExecSyncRequest(container_id=ctr.cid, cmd=["echo", word], timeout=20)

        def check(reply: Any) -> None:
            if reply.exit_code == 0 and reply.stdout != f"{word}\n".encode():
                self.counts.problems.append(f"unexpected: exec in {ctr.cid} gave {reply.stdout!r}")
                self.counts.unexpected += 1  # model lock held

        return self._ctr_op(ctr, lambda: self._call(self.rt.ExecSync, request), check)

    def _op_stop(self, ctr: Ctr) -> Callable[[], None]:
        request = api.StopContainerRequest(container_id=ctr.cid, timeout=0)
        return self._ctr_op(
            ctr, lambda: self._call(self.rt.StopContainer, request), lambda _: _set(ctr, "exited")
        )

    def _op_remove(self, ctr: Ctr) -> Callable[[], None]:
        request = api.RemoveContainerRequest(container_id=ctr.cid)

        def removed(_: Any) -> None:
            self.ctrs.pop(ctr.cid, None)
            self.removed.add(ctr.cid)

        return self._ctr_op(ctr, lambda: self._call(self.rt.RemoveContainer, request), removed)

    def _pod_call_ended(self, pod: Pod, reply: Any) -> bool:
        """Note a pod-wide call's end (under the lock); whether it succeeded.

        Cut off by a kill (no reply), the pod and its containers become uncertain.
        """
        pod.busy = False
        if reply is None:
            pod.uncertain = True
            for ctr in self._of(pod.pod_id):
                ctr.uncertain = True
            return False
        return not isinstance(reply, grpc.StatusCode)

    def _op_stop_pod(self, pod: Pod) -> Callable[[], None]:
        pod.busy = True

        def run() -> None:
            reply = self._call(
                self.rt.StopPodSandbox, api.StopPodSandboxRequest(pod_sandbox_id=pod.pod_id)
            )
            with self._lock:
                if self._pod_call_ended(pod, reply):
                    pod.ready = False
                    for ctr in self._of(pod.pod_id):  # created ones too: they are stopped
                        ctr.state = "exited"

        return run

    def _op_remove_pod(self, pod: Pod) -> Callable[[], None]:
        pod.busy = True

        def run() -> None:
            reply = self._call(
                self.rt.RemovePodSandbox, api.RemovePodSandboxRequest(pod_sandbox_id=pod.pod_id)
            )
            with self._lock:
                if self._pod_call_ended(pod, reply):
                    for ctr in self._of(pod.pod_id):
                        self.ctrs.pop(ctr.cid)
                        self.removed.add(ctr.cid)
                    self.pods.pop(pod.pod_id)
                    self.removed.add(pod.pod_id)

        return run

    def _op_pull(self, rng: random.Random) -> Callable[[], None]:
        image = api.ImageSpec(image=f"{self.registry_host}/{PULL_IMAGE}")

        def run() -> None:
            if rng.random() < 0.3:
                self._call(self.img.RemoveImage, api.RemoveImageRequest(image=image))
            else:
                self._call(self.img.PullImage, api.PullImageRequest(image=image), timeout=120)

        return run

    # -- checks -----------------------------------------------------------------

    def validate(self) -> None:
        """Compare what crio lists after a restart with the model; adopt what was cut off."""
        pods = {p.id: p for p in self.rt.ListPodSandbox(api.ListPodSandboxRequest()).items}
        ctrs = {c.id: c for c in self.rt.ListContainers(api.ListContainersRequest()).containers}
        for pod_id, pod in list(self.pods.items()):
            listed = pods.get(pod_id)
            if listed is None:
                if pod.uncertain:
                    self._forget_pod(pod_id)
                else:
                    self._problem("lost", f"pod sandbox {pod_id} is not listed")
                    self._forget_pod(pod_id)
                continue
            ready = listed.state == api.SANDBOX_READY
            if not pod.uncertain and ready != pod.ready:
                self._problem(
                    "lost", f"pod sandbox {pod_id} is {listed.state}, not ready={pod.ready}"
                )
            pod.ready, pod.uncertain = ready, False
        for pod_id, listed in pods.items():
            if pod_id in self.pods:
                continue
            if pod_id in self.removed:
                self._problem("resurrected", f"pod sandbox {pod_id} is listed again")
            elif listed.metadata.uid in self.maybe_pods:
                shared_pid = listed.metadata.uid in self.maybe_shared_pid
                self.pods[pod_id] = Pod(
                    pod_id,
                    listed.metadata.uid,
                    listed.state == api.SANDBOX_READY,
                    shared_pid=shared_pid,
                )
                self.ever.add(pod_id)
            else:
                self._problem("ghosts", f"pod sandbox {pod_id} ({listed.metadata.name})")
        self.maybe_pods.clear()
        self.maybe_shared_pid.clear()
        for cid, ctr in list(self.ctrs.items()):
            listed = ctrs.get(cid)
            if listed is None:
                if not ctr.uncertain:
                    self._problem("lost", f"container {cid} is not listed")
                self.ctrs.pop(cid)
                continue
            state = _STATES[listed.state]
            if not ctr.uncertain and not _allowed(ctr.state, state):
                self._problem("lost", f"container {cid} is {state}, was acknowledged {ctr.state}")
            ctr.state, ctr.uncertain = state, False
        for cid, listed in ctrs.items():
            if cid in self.ctrs:
                continue
            if cid in self.removed:
                self._problem("resurrected", f"container {cid} is listed again")
            elif (listed.pod_sandbox_id, listed.metadata.name) in self.maybe_ctrs:
                self.ctrs[cid] = Ctr(cid, listed.pod_sandbox_id, listed.metadata.name,
                                     _STATES[listed.state])  # fmt: skip
                self.ever.add(cid)
            else:
                self._problem("ghosts", f"container {cid} ({listed.metadata.name})")
        self.maybe_ctrs.clear()
        for ctr in list(self.ctrs.values()):
            if ctr.pod_id not in self.pods:
                self._problem("ghosts", f"container {ctr.cid} is listed without its pod")
        self._check_log()

    def _forget_pod(self, pod_id: str) -> None:
        self.pods.pop(pod_id, None)
        for ctr in list(self.ctrs.values()):
            if ctr.pod_id == pod_id:
                self.ctrs.pop(ctr.cid)

    def _check_log(self) -> None:
        text = self.crio.log_text()
        fresh, self._log_offset = text[self._log_offset :], len(text)
        for line in fresh.splitlines():
            if line.startswith("Traceback"):
                self._problem("unexpected", f"traceback in crio's log near: {line}")

    def remove_everything(self) -> None:
        """Stop and remove every pod (a few at a time), as the kubelet would."""
        pods = self.rt.ListPodSandbox(api.ListPodSandboxRequest(), timeout=60).items

        def remove(pod_id: str) -> None:
            self.rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
            self.rt.RemovePodSandbox(
                api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=120
            )

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for future in [pool.submit(remove, pod.id) for pod in pods]:
                future.result()

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self.crio.stop()


_STATES = {
    api.CONTAINER_CREATED: "created",
    api.CONTAINER_RUNNING: "running",
    api.CONTAINER_EXITED: "exited",
    api.CONTAINER_UNKNOWN: "unknown",
}


def _set(ctr: Ctr, state: str) -> None:
    ctr.state = state


def _allowed(acknowledged: str, listed: str) -> bool:
    """Whether a container acknowledged in one state may be listed in another after a crash."""
    if acknowledged == "created":
        return listed == "created"
    if acknowledged == "running":
        return listed in ("running", "exited")  # containers may end on their own
    return listed == acknowledged
