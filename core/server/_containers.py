"""Making a container: image, writable layer, config.json, runtime create, record.

Shared by CreateContainer and by RunPodSandbox's infra container.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crio.errors import InvalidRequestError, NotFoundError, StorageError, WrongStateError
from crio.image.local import find_image
from crio.oci import pod_annotations
from crio.oci.container import ContainerRequest, ImageConfig, PodContext
from crio.oci.hooks import HookDirs, HookFileError, inject, matching
from crio.oci.runtime import ContainerSpec, NamespaceMode, PodNamespaces
from crio.oci.spec import build_spec, parse_signal
from crio.server._common import Undo, begin_intent, runtime_of, state_of, store_of
from crio.server._cri_in import file_path
from crio.server._images import settings
from crio.state.intents import Intent, Operation
from crio.state.records import ContainerRecord, SandboxRecord

if TYPE_CHECKING:
    from crio.server.deps import Deps
    from crio.storage import Image

__all__ = [
    "CRIO_STATE_DIR_KEY",
    "allowed_annotations",
    "delete_layer",
    "find_stored_image",
    "made_by_this_crio",
    "make_container",
    "pod_context",
]

log = logging.getLogger("crio.server")

#: The key of a store container's metadata that names the state directory of the
#: crio that made it.
CRIO_STATE_DIR_KEY = "crio-state-dir"


def allowed_annotations(deps: Deps, handler: str, given: Mapping[str, str]) -> dict[str, str]:
    """The pod's behaviour-changing annotations that its handler allows (allowed_annotations)."""
    table = deps.config.crio.runtime.runtimes.get(handler)
    allowed = table.allowed_annotations if table is not None else []
    chosen = pod_annotations.honoured(given, allowed)
    for key in set(pod_annotations.KNOWN) & set(given) - set(chosen):
        log.debug("runtime handler %s does not allow annotation %s: not honoured", handler, key)
    return chosen


def _spec_with_hooks(hooks: HookDirs | None, **build: Any) -> dict[str, Any]:
    """:func:`build_spec`, then the OCI hooks of ``hooks_dir`` that match (blocking)."""
    spec = build_spec(**build)
    if hooks is None:
        return spec
    try:
        found = hooks.current()
    except HookFileError as exc:
        raise WrongStateError(f"crio.runtime.hooks_dir: {exc}") from None
    request: ContainerRequest = build["request"]
    args = spec.get("process", {}).get("args", [])
    return inject(spec, matching(found, spec.get("annotations", {}), args, bool(request.mounts)))


def made_by_this_crio(metadata: str, state_dir: str) -> bool:
    """Whether a store container's metadata says this crio (``state_dir``) made it."""
    with contextlib.suppress(ValueError):
        doc = json.loads(metadata or "{}")
        return (
            isinstance(doc, dict)
            and isinstance(doc.get("pod-id"), str)
            and doc.get(CRIO_STATE_DIR_KEY) == state_dir
        )
    return False


def pod_context(deps: Deps, pod: SandboxRecord) -> PodContext:
    return PodContext(
        pod_sandbox_id=pod.pod_sandbox_id,
        name=pod.name,
        namespace=pod.namespace,
        uid=pod.uid,
        hostname=pod.hostname,
        namespaces=pod.namespaces,
        network_mode=pod.network_mode,
        pid_mode=pod.pid_mode,
        ipc_mode=pod.ipc_mode,
        cgroup_parent=pod.cgroup_parent,
        files_dir=pod.run_dir,
        shm_path=pod.namespaces.shm or "/dev/shm",
        privileged=pod.privileged,
        runtime_handler=pod.runtime_handler,
    )


def _log_path(deps: Deps, pod: SandboxRecord, container_id: str, relative: str) -> str:
    base = pod.log_directory or deps.config.crio.log_dir
    path = os.path.normpath(os.path.join(base, relative or f"{container_id}.log"))
    if not path.startswith(base.rstrip("/") + "/"):
        raise InvalidRequestError(f"CreateContainer: config.log_path {relative!r} leaves {base}")
    # Each part fits on its own; together with the pod's log_directory it must too.
    file_path(path, "config.log_path (joined to the pod's log_directory)", "CreateContainer")
    return path


async def _target_pid(deps: Deps, pod: SandboxRecord, request: ContainerRequest) -> int:
    if request.security.pid is not NamespaceMode.TARGET:
        return 0
    target_id = request.security.target_id
    try:
        target = state_of(deps).container(target_id)
    except NotFoundError:
        raise NotFoundError(
            "CreateContainer: linux.security_context.namespace_options.target_id: "
            f"container {target_id} not found"
        ) from None
    if target.pod_sandbox_id != pod.pod_sandbox_id:
        raise InvalidRequestError(
            f"CreateContainer: target container {target_id} is not in pod {pod.pod_sandbox_id}"
        )
    status = await runtime_of(deps, target.runtime_handler).container_state(target.container_id)
    return status.pid


async def delete_layer(deps: Deps, container_id: str) -> None:
    """Unmount and remove a container's layer and store record (gone already is fine)."""
    store = store_of(deps)
    async with deps.layer_changes:
        with contextlib.suppress(NotFoundError):
            await store.delete_container(container_id)


async def find_stored_image(deps: Deps, name: str) -> Image | None:
    """The stored image: by exact key first, then as the image RPCs resolve short names."""
    store = store_of(deps)
    try:
        return await store.image(name)
    except NotFoundError:
        pass
    return await find_image(store, name, (await settings(deps)).registries)


async def make_container(
    deps: Deps,
    pod: SandboxRecord,
    request: ContainerRequest,
    container_id: str,
    name_key: str,
    undo: Undo,
    *,
    infra: bool = False,
    user_specified_image: str = "",
    image_field: str = "CreateContainer: config.image.image",
) -> ContainerRecord:
    """Create the container in the store and the runtime and return its record (not saved).

    Every step pushes its reversal on ``undo``.
    """
    store = store_of(deps)
    image = await find_stored_image(deps, request.image)
    if image is None:
        raise NotFoundError(f"{image_field}: image {request.image!r} is not in the store")
    bundle = Path(store.container_run_dir(container_id))
    # Before the store and the runtime make anything: a crash from here on is rolled
    # back at the next start. The caller ends the intent once the record is saved.
    intended = ContainerRecord(
        container_id=container_id,
        pod_sandbox_id=pod.pod_sandbox_id,
        name=request.name,
        attempt=request.attempt,
        runtime_handler=pod.runtime_handler,
        created_at=deps.clock(),
        bundle=str(bundle),
        image=request.image,
        infra=infra,
    )
    await begin_intent(deps, Intent(Operation.CREATE_CONTAINER, container=intended), undo)
    image_config = deps.image_configs.get(image.id)
    if image_config is None:
        # An image's id is its config's digest: what was read once stays true.
        raw_config = json.loads(await store.image_config(image.id))
        image_config = ImageConfig.from_oci(raw_config.get("config"))
        if len(deps.image_configs) >= 256:
            deps.image_configs.pop(next(iter(deps.image_configs)))
        deps.image_configs[image.id] = image_config
    async with deps.layer_changes:
        await store.create_container(
            image.id,
            names=[name_key],
            container_id=container_id,
            metadata=json.dumps(
                {
                    "pod-id": pod.pod_sandbox_id,
                    "pod-name": pod.name,
                    "image-name": request.image,
                    # Whose it is: the store is shared (podman, another crio), and only
                    # what names this crio's state directory is ever its to clean up.
                    CRIO_STATE_DIR_KEY: deps.config.crio.state_dir,
                }
            ),
        )
        undo.push("the container's layer", lambda: delete_layer(deps, container_id))
        rootfs = await store.mount_container(container_id)
    await asyncio.to_thread(bundle.mkdir, parents=True, exist_ok=True)
    handler = deps.config.crio.runtime.runtimes.get(pod.runtime_handler)
    defaults = deps.spec_defaults
    if handler is not None and handler.privileged_without_host_devices:
        defaults = dataclasses.replace(defaults, privileged_without_host_devices=True)
    target_pid = await _target_pid(deps, pod, request)
    if not infra:
        given = pod_annotations.devices(
            allowed_annotations(deps, pod.runtime_handler, pod.annotations)
        )
        if given:
            request = dataclasses.replace(request, devices=(*request.devices, *given))
    try:
        spec = await asyncio.to_thread(
            _spec_with_hooks,
            deps.hooks,
            container_id=container_id,
            request=request,
            image=image_config,
            pod=pod_context(deps, pod),
            defaults=defaults,
            rootfs=Path(rootfs),
            target_pid=target_pid,
        )
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{image_field.partition(':')[0]}: {exc}") from None
    log_path = _log_path(deps, pod, container_id, request.log_path)
    await asyncio.to_thread(os.makedirs, os.path.dirname(log_path), exist_ok=True)
    runtime = runtime_of(deps, pod.runtime_handler)
    await runtime.create_container(
        ContainerSpec(
            container_id=container_id,
            pod_sandbox_id=pod.pod_sandbox_id,
            name=name_key,
            bundle=bundle,
            oci_spec=spec,
            log_path=log_path,
            stdin=request.stdin,
            stdin_once=request.stdin_once,
            tty=request.tty,
            annotations=dict(request.annotations),
            stop_signal=parse_signal(image_config.stop_signal),
            privileged=request.security.privileged,
        )
    )
    undo.push("the runtime's container", lambda: runtime.remove_container(container_id))
    names = getattr(image, "names", ()) or ()
    return dataclasses.replace(
        intended,
        created_at=deps.clock(),
        image=names[0] if names and request.image == image.id else request.image,
        image_ref=f"sha256:{image.id}" if not str(image.id).startswith("sha256:") else image.id,
        user_specified_image=user_specified_image,
        rootfs=str(rootfs),
        labels=dict(request.labels),
        annotations=dict(request.annotations),
        log_path=log_path,
        mounts=request.mounts,
        resources=request.resources,
        tty=request.tty,
        stdin=request.stdin,
        stdin_once=request.stdin_once,
        poststop_hooks=bool((spec.get("hooks") or {}).get("poststop")),
    )


def namespaces_with_pid(namespaces: PodNamespaces, pid: int) -> PodNamespaces:
    if pid <= 0:
        raise StorageError("the infra container has no PID")
    return dataclasses.replace(namespaces, pid=f"/proc/{pid}/ns/pid")
