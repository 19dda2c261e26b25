# The whole set-up on a fresh Debian 12 machine, as root:
#   make run        prepare what is missing, then run crio in the foreground
#   make test       prepare what is missing, then run the whole suite
#   make install    install crio on this node (venv, commands, config, unit); make uninstall
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Debian packages crio and its tests use for real (see README).
DEB_PACKAGES := runc crun conmon containernetworking-plugins iptables iproute2 catatonit \
	skopeo docker-registry apache2-utils busybox-static btrfs-progs attr \
	qemu-system-x86 gnupg containerd podman uidmap zstd kmod e2fsprogs \
	util-linux tar gcc libc6-dev man-db groff-base tmux bash-completion zsh \
	dmsetup xfsprogs nfs-kernel-server mmdebstrap

# Where `make install` puts crio (see hack/install.sh).
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR ?= $(PREFIX)/share/man
SYSTEM_PYTHON ?= /usr/bin/python3
PIP_INSTALL_FLAGS ?=
INSTALL_VARS = DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" SYSCONFDIR="$(SYSCONFDIR)" \
	UNITDIR="$(UNITDIR)" MANDIR="$(MANDIR)" SYSTEM_PYTHON="$(SYSTEM_PYTHON)" \
	PIP_INSTALL_FLAGS="$(PIP_INSTALL_FLAGS)"

.PHONY: run test prepare install uninstall deb venv host vm-assets docs systemd-guest prometheus lint \
	proto-check clean

run: prepare
	$(BIN)/crio $(CRIO_FLAGS)

test: prepare
	$(BIN)/python hack/genproto.py --check
	$(BIN)/ruff check core plugins tests bench hack
	$(BIN)/pytest -q $(PYTEST_FLAGS)

# Everything `make run` and `make test` need on this machine (was `make install`).
prepare: deb venv host vm-assets docs systemd-guest prometheus

install:
	$(INSTALL_VARS) hack/install.sh

uninstall:
	$(INSTALL_VARS) hack/install.sh --uninstall

deb:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

host:
	hack/prepare-host.sh

# The pod VM kernel and initramfs (runtime_type "vm"); cheap when already current.
# Not fatal: without them only the VM handlers report not ready.
vm-assets: venv
	@$(BIN)/crio vm-assets || echo "warning: no pod VM assets; runtime_type 'vm' handlers stay not ready"

# Manual pages (crio(8), crio.conf(5), kpod(1), kpod-COMMAND(1)) and bash/zsh completion,
# generated from the command-line and configuration definitions; make install (DESTDIR,
# PREFIX) uses it too.
SHAREDIR ?= $(PREFIX)/share
docs: venv
	@$(BIN)/python -m crio.manpages $(DESTDIR)$(MANDIR) >/dev/null
	@$(BIN)/python -m crio.completion $(DESTDIR)$(SHAREDIR) >/dev/null
	@echo "manual pages under $(DESTDIR)$(MANDIR), completion under $(DESTDIR)$(SHAREDIR)"

# The Debian 12 guest with systemd as PID 1 for the node-service tests; cheap when
# current. Not fatal: without it those tests skip, saying why.
systemd-guest: vm-assets
	@cd tests && ../$(BIN)/python -m support.systemd_guest || \
		echo "warning: no systemd guest image; tests/integration/systemd will skip"

# Debian's prometheus and promtool, unpacked (not installed) under /var/tmp/crio-test for
# the metrics tests; cheap when present. Not fatal: without them that test skips, saying why.
prometheus: venv
	@cd tests && ../$(BIN)/python -m support.prometheus || \
		echo "warning: no prometheus for the tests; the scrape by Debian's prometheus will skip"

lint: venv
	$(BIN)/ruff check core plugins tests bench hack

proto-check: venv
	$(BIN)/python hack/genproto.py --check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
