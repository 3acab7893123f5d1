# netprobe.ebpf: `make lab` runs the local lab, `make test` runs every test. Both set up what they need.
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Everything the tools cache or install goes under .cache/, so `make test` writes nothing outside the checkout
# and /tmp: ansible's home (ansible-lint and molecule install collections and roles into ANSIBLE_HOME through
# ansible-compat; ansible's local tmp), pip's and ansible-lint's caches (XDG_CACHE_HOME). tools/ansible-test.sh gives
# ansible-test a HOME of its own below .cache/ (its venvs and cache live in ~/.ansible/test, whatever the variables).
export ANSIBLE_HOME := $(CURDIR)/.cache/ansible-home
export XDG_CACHE_HOME := $(CURDIR)/.cache/xdg-cache
export XDG_CONFIG_HOME := $(CURDIR)/.cache/xdg-config
export XDG_DATA_HOME := $(CURDIR)/.cache/xdg-data
export XDG_STATE_HOME := $(CURDIR)/.cache/xdg-state
export PYTHONPYCACHEPREFIX := $(CURDIR)/.cache/pycache
# molecule scenarios live in molecule/ at the top (molecule 25.9+ would look in extensions/molecule/)
export MOLECULE_GLOB := molecule/*/molecule.yml

.PHONY: setup lab lab-down fleet fleet-down test unit units print-env adhoc-check integration sanity lint molecule matrix bench bench-fleet

setup:
	tools/setup.sh

lab: setup
	ansible-playbook playbooks/lab.yml

lab-down: setup
	ansible-playbook playbooks/lab.yml -e lab_state=absent

# FLEET_HOSTS=N (1-32, default 8) simulated hosts over real ssh; inventory in .cache/fleet/inventory.yml
fleet: setup
	tools/fleet.sh up

fleet-down:
	tools/fleet.sh down

unit: setup
	pytest -q tests/unit

# the same unit tests through ansible-test (tests/unit/plugins/... is its layout)
units: setup
	tools/ansible-test.sh units --venv --python 3.11

integration: setup
	pytest -q tests/integration

sanity: setup
	tools/sanity.sh

# --offline: otherwise ansible-lint installs the collection through ansible-galaxy first
lint: setup
	ansible-lint --offline --profile production roles/ playbooks/ molecule/default

molecule: setup
	molecule test -s default

test: setup
	pytest -q --durations=15 tests/unit tests/integration
	$(MAKE) --no-print-directory sanity units lint molecule

matrix: setup
	tools/kernel-matrix/run.sh

bench: setup
	python benchmarks/chain_cost.py
	python benchmarks/rerun_cost.py --profile

# the environment the targets run with (tests/integration/test_hygiene.py uses it)
print-env:
	@env | grep -E '^(ANSIBLE|XDG|PYTHONPYCACHEPREFIX|MOLECULE)' | sort

# one module run through ansible with the environment above (tests/integration/test_hygiene.py)
adhoc-check: setup
	@ansible localhost -m netprobe.ebpf.ebpf_facts -a 'gather_subset=chains interfaces=none' >/dev/null

bench-fleet: setup
	python benchmarks/fleet.py --breakdown
