# clusterdns.doctor developer entry points. Two commands matter (see README):
#   make diagnose   run the read-only diagnosis against this machine (and the cluster of the current kubeconfig)
#   make test       install everything needed, then run every linter and test suite; non-zero on any failure
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT      := $(CURDIR)
VENV      := $(ROOT)/.venv
BIN       := $(VENV)/bin
CACHE     := $(ROOT)/.cache
COLL_PATH := $(CACHE)/collections
COLL_LINK := $(COLL_PATH)/ansible_collections/clusterdns/doctor
SANITY    := $(CACHE)/sanity/ansible_collections/clusterdns/doctor
PYBIN     := $(CACHE)/pybin
export PATH := $(BIN):$(PYBIN):$(PATH)
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(COLL_PATH):$(CACHE)/extra_collections
export ANSIBLE_LOCAL_TEMP := $(CACHE)/ansible-local
export ANSIBLE_HOME := $(CACHE)/ansible-home
export ANSIBLE_NOCOLOR := 1
export PY_COLORS := 0

APT_PACKAGES := dnsmasq-base iptables nftables conntrack iproute2 bind9-dnsutils dnsperf bpftrace \
                shellcheck openssl podman runc catatonit debootstrap rsync procps kmod bpftool iputils-ping chromium

.PHONY: help setup apt venv compat-venv cloud-venv link awx-collection diagnose test demo lint sanity units integration molecule bench clean

help:
	@echo "make diagnose   - run playbooks/diagnose.yml against this machine (report in ./clusterdns-report)"
	@echo "make test       - set up, then lint, sanity, unit, integration and molecule tests"
	@echo "make setup      - only the set-up (apt packages, .venv, collection link)"

setup: apt venv compat-venv cloud-venv link awx-collection

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "setup: need root for apt-get install$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The newest CPython >= 3.11 on the machine (pyenv versions first, then the PATH).
PYTHON ?= $(shell for v in $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.* 2>/dev/null | sort -V -r); do \
            [ -x $$v/bin/python3 ] && $$v/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 12))' && { echo $$v/bin/python3; exit; }; done; \
            for c in python3.14 python3.13 python3.12 python3.11 python3; do command -v $$c >/dev/null 2>&1 && { command -v $$c; exit; }; done)

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@echo "setup: creating $(VENV) with $(PYTHON)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q -U pip
	@$(BIN)/python -m pip install -q -r requirements-dev.txt
	@touch $@

# The oldest supported ansible-core (meta/runtime.yml), for the "compat" test stage.
COMPAT := $(CACHE)/venv-compat
compat-venv: $(COMPAT)/.installed
$(COMPAT)/.installed: requirements.txt tests/requirements-compat.txt
	@echo "setup: creating $(COMPAT) (oldest supported ansible-core)"
	@test -x $(COMPAT)/bin/python || $(PYTHON) -m venv $(COMPAT)
	@$(COMPAT)/bin/python -m pip install -q -U pip
	@cd tests && $(COMPAT)/bin/python -m pip install -q -r requirements-compat.txt
	@touch $@

# The cloud interpreter of the security_groups role (boto3/botocore, moto's server, the Alibaba Cloud ECS
# SDK): a venv of its own, because boto3 pins python-dateutil < 3 and kubernetes needs >= 3 (docs/security_groups.md).
CLOUD := $(CACHE)/venv-cloud
cloud-venv: $(CLOUD)/.installed
$(CLOUD)/.installed: tests/integration/requirements-cloud.txt
	@echo "setup: creating $(CLOUD) (cloud API interpreter for the security_groups tests)"
	@test -x $(CLOUD)/bin/python || $(PYTHON) -m venv $(CLOUD)
	@$(CLOUD)/bin/python -m pip install -q -U pip
	@$(CLOUD)/bin/python -m pip install -q -r tests/integration/requirements-cloud.txt
	@touch $@

link:
	@mkdir -p $(dir $(COLL_LINK)) $(ANSIBLE_LOCAL_TEMP) $(ANSIBLE_HOME) $(PYBIN) $(HOME)/.ansible/test/cache
	@ln -sfn $(ROOT) $(COLL_LINK)
	@ver=$$(sed -n "s/^ *pip='\\([0-9.]*\\)',.*/\\1/p" $$($(BIN)/python -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py | head -1); \
	 if [ -n "$$ver" ]; then cp tests/utils/get_pip.py $(HOME)/.ansible/test/cache/get_pip_$${ver//./_}.py; fi
	@for v in $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.* 2>/dev/null); do \
	   n=$$(basename $$v); ln -sfn $$v/bin/python$${n%.*} $(PYBIN)/python$${n%.*}; done

# awx.awx (for playbooks/awx_setup.yml) left the ansible package in 14; Galaxy is out of reach, so
# it is taken from the ansible 13.8.0 wheel on PyPI (awx.awx 24.6.1) into .cache/extra_collections.
AWX_COLLECTION := $(CACHE)/extra_collections/ansible_collections/awx/awx/MANIFEST.json
awx-collection: $(AWX_COLLECTION)
$(AWX_COLLECTION): | venv
	@echo "setup: extracting awx.awx from the ansible 13.8.0 wheel"
	@$(BIN)/python -m pip download -q --no-deps 'ansible==13.8.0' -d $(CACHE)/dl-awx
	@$(BIN)/python -c "import zipfile; z = zipfile.ZipFile('$(CACHE)/dl-awx/ansible-13.8.0-py3-none-any.whl'); \
	  [z.extract(n, '$(CACHE)/extra_collections') for n in z.namelist() if n.startswith('ansible_collections/awx/awx/')]"
	@rm -rf $(CACHE)/dl-awx

diagnose: setup
	ansible-playbook playbooks/diagnose.yml $(ARGS)

test: setup
	tests/run-all

# The lab demo (docs/lab.md): lab up (unless it is up already) with three faults, diagnose, heal,
# diagnose clean; on exit the faults are healed and the lab is taken down only if the demo started it.
# Held under the lab lock, so that it never runs beside the lab tests. The diagnoses read only the
# CoreDNS log written since the demo started (an older lab's log may hold other faults' traces).
DEMO_FAULTS ?= session-affinity autopath statefulset-servicename
demo: setup
	@flock /run/lock/clusterdns-lab.lock bash -euc ' \
	  start=$$(date +%s); started=0; \
	  if ! tests/lab/labctl status >/dev/null 2>&1; then tests/lab/labctl up; started=1; fi; \
	  trap "for f in $(DEMO_FAULTS); do tests/lab/labctl heal \$$f >/dev/null 2>&1 || true; done; \
	        if [ \$$started = 1 ]; then tests/lab/labctl down; fi" EXIT; \
	  for f in $(DEMO_FAULTS); do tests/lab/labctl fault $$f; done; \
	  kc=$$(tests/lab/labctl kubeconfig); \
	  ansible-playbook playbooks/diagnose.yml -e clusterdns_kubeconfig=$$kc -e clusterdns_report_dir=clusterdns-demo/faulty \
	    -e clusterdns_log_seconds=$$(( $$(date +%s) - start + 5 )) || true; \
	  sed -n "1,40p" clusterdns-demo/faulty/report.md; \
	  for f in $$(echo $(DEMO_FAULTS) | tr " " "\n" | tac); do tests/lab/labctl heal $$f; done; \
	  ansible-playbook playbooks/diagnose.yml -e clusterdns_kubeconfig=$$kc -e clusterdns_report_dir=clusterdns-demo/healed \
	    -e clusterdns_log_seconds=$$(( $$(date +%s) - start + 5 )); \
	  echo "demo: reports in clusterdns-demo/faulty and clusterdns-demo/healed"'

lint: setup
	tests/run-all lint

sanity: setup
	tests/run-all sanity

units: setup
	tests/run-all units

integration: setup
	tests/run-all integration

molecule: setup
	tests/run-all molecule

clean:
	rm -rf $(CACHE) tests/output clusterdns-report
