"""CRI resource limits as OCI ``linux.resources``, checked on the way."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from crio.errors import InvalidRequestError
from crio.oci.container import Resources

__all__ = ["oci_resources", "oom_score_adj", "validate_resources"]

_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_PAGE_SIZE = re.compile(r"^\d+(KB|MB|GB|TB|PB)$")


def validate_resources(res: Resources, field_prefix: str) -> None:
    """:raises InvalidRequestError: naming the field of a negative or malformed value."""
    for name in (
        "cpu_period",
        "cpu_quota",
        "cpu_shares",
        "memory_limit_in_bytes",
        "memory_swap_limit_in_bytes",
    ):
        if getattr(res, name) < 0:
            raise InvalidRequestError(
                f"{field_prefix}.{name}: must not be negative, got {getattr(res, name)}"
            )
    if res.cpu_period and not 1000 <= res.cpu_period <= 1_000_000:
        raise InvalidRequestError(
            f"{field_prefix}.cpu_period: {res.cpu_period} is outside 1000..1000000 microseconds"
        )
    if res.cpu_quota and res.cpu_quota < 1000:
        raise InvalidRequestError(
            f"{field_prefix}.cpu_quota: {res.cpu_quota} is below the kernel's 1000 microseconds"
        )
    if not -1000 <= res.oom_score_adj <= 1000:
        raise InvalidRequestError(
            f"{field_prefix}.oom_score_adj: {res.oom_score_adj} is outside -1000..1000"
        )
    if (
        res.memory_swap_limit_in_bytes
        and res.memory_limit_in_bytes
        and res.memory_swap_limit_in_bytes < res.memory_limit_in_bytes
    ):
        raise InvalidRequestError(
            f"{field_prefix}.memory_swap_limit_in_bytes: must not be below memory_limit_in_bytes"
        )
    for name in ("cpuset_cpus", "cpuset_mems"):
        value = getattr(res, name)
        if value and not _CPU_LIST.match(value):
            raise InvalidRequestError(
                f"{field_prefix}.{name}: {value!r} is not a list such as '0-2,4'"
            )
    for i, limit in enumerate(res.hugepage_limits):
        if not _PAGE_SIZE.match(limit.page_size):
            raise InvalidRequestError(
                f"{field_prefix}.hugepage_limits[{i}].page_size: {limit.page_size!r} "
                "is not a size such as '2MB' or '1GB'"
            )
        if limit.limit < 0:
            raise InvalidRequestError(
                f"{field_prefix}.hugepage_limits[{i}].limit: must not be negative"
            )


def oom_score_adj(res: Resources, minimum: int) -> int:
    """The container's oom_score_adj, never below what crio may set (``minimum``)."""
    return max(res.oom_score_adj, minimum)


def oci_resources(
    res: Resources,
    *,
    field_prefix: str,
    pids_limit: int = 0,
    cgroup_v2: bool = False,
    swap_accounting: bool = False,
    hugepage_sizes: Collection[str] = (),
) -> dict[str, Any]:
    """The OCI ``linux.resources`` object (without devices) for ``res``.

    :param pids_limit: the node default; 0 or -1 means none.
    :param cgroup_v2: whether the host is cgroup v2 only (``unified`` needs it).
    :param swap_accounting: whether the host accounts swap (memsw); then a
        memory limit without a swap limit also caps swap at the same value.
    :param hugepage_sizes: the page sizes the host has ("2MB", "1GB"); limits
        for other sizes are left out.
    :raises InvalidRequestError: see :func:`validate_resources`; ``unified`` on cgroup v1.
    """
    validate_resources(res, field_prefix)
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_period:
        cpu["period"] = res.cpu_period
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = {}
    if res.memory_limit_in_bytes:
        memory["limit"] = res.memory_limit_in_bytes
        if res.memory_swap_limit_in_bytes:
            memory["swap"] = res.memory_swap_limit_in_bytes
        elif swap_accounting:
            memory["swap"] = res.memory_limit_in_bytes
    if memory:
        out["memory"] = memory
    if pids_limit > 0:
        out["pids"] = {"limit": pids_limit}
    pages = [
        {"pageSize": h.page_size, "limit": h.limit}
        for h in res.hugepage_limits
        if h.page_size in hugepage_sizes
    ]
    if pages:
        out["hugepageLimits"] = pages
    if res.unified:
        if not cgroup_v2:
            raise InvalidRequestError(
                f"{field_prefix}.unified: needs cgroup v2, and this host uses cgroup v1"
            )
        out["unified"] = dict(res.unified)
    return out
