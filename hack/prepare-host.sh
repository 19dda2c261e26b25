#!/bin/bash
# Prepare this host for crio: idempotent, run by `make run` and `make test`.
set -euo pipefail

# crun refuses a hybrid cgroup layout in which cgroup v2 still holds the
# hugetlb controller; giving hugetlb a v1 hierarchy of its own fixes that.
if [ -d /sys/fs/cgroup/unified ] && ! mountpoint -q /sys/fs/cgroup/hugetlb 2>/dev/null; then
	if grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then
		mkdir -p /sys/fs/cgroup/hugetlb
		mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb ||
			echo "prepare-host: could not mount hugetlb as cgroup v1; crun may refuse to run" >&2
	fi
fi

# A signature policy that accepts everything, as Debian's containers-common
# would install, when the host has none.
if [ ! -e /etc/containers/policy.json ]; then
	mkdir -p /etc/containers
	cat >/etc/containers/policy.json <<'JSON'
{
    "default": [{"type": "insecureAcceptAnything"}],
    "transports": {"docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}}
}
JSON
fi

# The default CNI network, when none is configured.
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$here/contrib/cni/10-crio-bridge.conflist" ] && [ -z "$(ls -A /etc/cni/net.d 2>/dev/null)" ]; then
	mkdir -p /etc/cni/net.d
	cp "$here/contrib/cni/10-crio-bridge.conflist" /etc/cni/net.d/
fi

# Bridged pod traffic must traverse iptables for portmap's rules.
modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.ipv4.ip_forward=1 || true
