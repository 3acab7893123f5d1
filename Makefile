# netprobe.ebpf: `make lab` runs the local lab, `make test` runs every test. Both set up what they need.
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup lab lab-down test unit integration bench

setup:
	tools/setup.sh

lab: setup
	ansible-playbook playbooks/lab.yml

lab-down: setup
	ansible-playbook playbooks/lab.yml -e lab_state=absent

unit: setup
	pytest -q tests/unit

integration: setup
	pytest -q tests/integration

test: setup
	pytest -q tests/unit tests/integration

bench: setup
	python benchmarks/chain_cost.py
	python benchmarks/rerun_cost.py --profile
