"""Collection metadata that promises only what is tested (galaxy.yml, meta/runtime.yml, module docs)."""

import os
import re

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = os.path.join(REPO, 'plugins', 'modules')


def read(*parts):
    with open(os.path.join(REPO, *parts)) as f:
        return f.read()


def modules():
    return sorted(n[:-3] for n in os.listdir(MODULES) if n.endswith('.py') and not n.startswith('_'))


def test_action_group_lists_every_module():
    runtime = yaml.safe_load(read('meta', 'runtime.yml'))
    assert sorted(runtime['action_groups']['ebpf']) == modules()


def test_requires_ansible_is_the_oldest_core_ci_installs():
    claimed = re.match(r'>=(\d+\.\d+)', yaml.safe_load(read('meta', 'runtime.yml'))['requires_ansible']).group(1)
    tested = re.search(r'^ansible-core>=(\d+\.\d+)', read('requirements-dev.txt'), re.M).group(1)
    assert claimed == tested


def test_version_added_is_not_newer_than_the_collection():
    version = tuple(int(x) for x in yaml.safe_load(read('galaxy.yml'))['version'].split('.'))
    for name in modules():
        added = re.search(r'^version_added: ([\d.]+)$', read('plugins', 'modules', name + '.py'), re.M).group(1)
        added = tuple(int(x) for x in added.split('.'))
        assert added <= version, name


def test_galaxy_metadata_has_no_placeholder_urls():
    galaxy = yaml.safe_load(read('galaxy.yml'))
    for key in ('repository', 'documentation', 'homepage', 'issues'):
        assert 'invalid' not in str(galaxy.get(key) or ''), key
