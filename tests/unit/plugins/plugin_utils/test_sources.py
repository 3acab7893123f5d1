"""The action plugins' controller side (issue 12 items 1-2): bounded reads, no C headers in results."""

import os

import pytest
from ansible.errors import AnsibleActionFail

from ansible_collections.netprobe.ebpf.plugins.module_utils import _limits
from ansible_collections.netprobe.ebpf.plugins.plugin_utils import _sources


class FakeAction:
    """Only what resolve_code uses: _find_needle resolves src as given."""

    @staticmethod
    def _find_needle(_dirname, needle):
        return needle


def resolve(spec):
    return _sources.resolve_code(FakeAction(), dict(spec), 'probe p')


def test_src_must_be_a_regular_file_of_bounded_size(tmp_path):
    for path in ('/dev/zero', '/dev/urandom', str(tmp_path)):
        with pytest.raises(AnsibleActionFail) as e:
            resolve({'src': path})
        assert 'not a regular file' in str(e.value)
    fifo = str(tmp_path / 'fifo')
    os.mkfifo(fifo)
    with pytest.raises(AnsibleActionFail) as e:
        resolve({'src': fifo})  # would block forever if it were opened for reading
    assert 'FIFO' in str(e.value)
    big = tmp_path / 'big.c'
    with open(str(big), 'wb') as f:
        f.truncate(_limits.MAX_SOURCE + 1)
    with pytest.raises(AnsibleActionFail) as e:
        resolve({'src': str(big)})
    assert 'limit is 1 MiB' in str(e.value)
    small = tmp_path / 'small.c'
    small.write_text('int x;\n')
    assert resolve({'src': str(small)})['source'] == 'int x;\n'


def test_inline_limits_are_checked_on_the_controller():
    with pytest.raises(AnsibleActionFail) as e:
        resolve({'source': 'x' * (_limits.MAX_SOURCE + 1)})
    assert 'source is' in str(e.value)
    with pytest.raises(AnsibleActionFail) as e:
        resolve({'probe': 'counter', 'cflags': ['-DX'] * 1000})
    assert 'cflags' in str(e.value)
    with pytest.raises(AnsibleActionFail) as e:
        resolve({'source': ['not', 'a', 'string']})
    assert 'must be a string' in str(e.value)


def test_results_do_not_carry_the_bpf_files():
    result = {'changed': True, 'invocation': {'module_args': {'interface': 'eth0', '_netprobe_files': {'a': 'x' * 9000}}}}
    _sources.strip_files(result)
    assert result['invocation']['module_args'] == {'interface': 'eth0'}
    assert _sources.strip_files({'failed': True}) == {'failed': True}
