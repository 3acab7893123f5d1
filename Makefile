# netprobe.ebpf: `make lab` runs the local lab, `make test` runs every test. Both set up what they need.
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# molecule scenarios live in molecule/ at the top (molecule 25.9+ would look in extensions/molecule/)
export MOLECULE_GLOB := molecule/*/molecule.yml

.PHONY: setup lab lab-down fleet fleet-down test unit integration sanity lint molecule matrix bench bench-fleet

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
	pytest -q tests/unit tests/integration
	$(MAKE) --no-print-directory sanity lint molecule

matrix: setup
	tools/kernel-matrix/run.sh

bench: setup
	python benchmarks/chain_cost.py
	python benchmarks/rerun_cost.py --profile

bench-fleet: setup
	python benchmarks/fleet.py --breakdown
