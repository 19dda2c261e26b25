# The whole set-up on a fresh Debian 12 machine, as root:
#   make run    install what is missing, then run crio in the foreground
#   make test   install what is missing, then run the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Debian packages crio and its tests use for real (see README).
DEB_PACKAGES := runc crun conmon containernetworking-plugins iptables iproute2 catatonit \
	skopeo docker-registry apache2-utils busybox-static btrfs-progs attr \
	qemu-system-x86 gnupg containerd podman uidmap zstd kmod e2fsprogs \
	util-linux tar gcc libc6-dev man-db groff-base tmux bash-completion zsh \
	dmsetup xfsprogs nfs-kernel-server

.PHONY: run test install deb venv host vm-assets docs lint proto-check clean

run: install
	$(BIN)/crio $(CRIO_FLAGS)

test: install
	$(BIN)/python hack/genproto.py --check
	$(BIN)/ruff check core plugins tests bench hack
	$(BIN)/pytest -q $(PYTEST_FLAGS)

install: deb venv host vm-assets docs

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
PREFIX ?= /usr/local
MANDIR ?= $(PREFIX)/share/man
SHAREDIR ?= $(PREFIX)/share
docs: venv
	@$(BIN)/python -m crio.manpages $(DESTDIR)$(MANDIR) >/dev/null
	@$(BIN)/python -m crio.completion $(DESTDIR)$(SHAREDIR) >/dev/null
	@echo "manual pages under $(DESTDIR)$(MANDIR), completion under $(DESTDIR)$(SHAREDIR)"

lint: venv
	$(BIN)/ruff check core plugins tests bench hack

proto-check: venv
	$(BIN)/python hack/genproto.py --check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
