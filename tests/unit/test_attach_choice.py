"""Pure logic of _attach: the tc_position option and the choice of a path from the kernel's capabilities
(the capabilities themselves are probed on the real kernel in tests/integration/test_attach.py)."""

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _attach
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

ALL = {_attach.XDP_NETLINK: True, _attach.XDP_LINK: True, _attach.TC_CLS_BPF: True, _attach.TCX: True}
OLD = {_attach.XDP_NETLINK: True, _attach.XDP_LINK: False, _attach.TC_CLS_BPF: True, _attach.TCX: False}


@pytest.mark.parametrize('value, expected', [
    (None, _attach.Position('last')), ('first', _attach.Position('first')), ('last', _attach.Position('last')),
    ({'before': 42}, _attach.Position('before', 42)), ({'after': '42'}, _attach.Position('after', 42)),
    ({'after': 'cil_from_netdev'}, _attach.Position('after', 'cil_from_netdev'))])
def test_position_parse(value, expected):
    assert _attach.Position.parse(value) == expected


@pytest.mark.parametrize('value', ['middle', {'before': ''}, {'before': 1, 'after': 2}, {'between': 3}, 7])
def test_position_parse_rejects(value):
    with pytest.raises(NetprobeError, match='invalid tc_position'):
        _attach.Position.parse(value)


@pytest.mark.parametrize('mode, requested, have, expected', [
    ('xdp', 'auto', ALL, _attach.XDP_LINK), ('xdp', 'auto', OLD, _attach.XDP_NETLINK),
    ('xdp', 'netlink', ALL, _attach.XDP_NETLINK), ('xdp', 'link', ALL, _attach.XDP_LINK),
    ('tc', 'auto', ALL, _attach.TCX), ('tc', 'auto', OLD, _attach.TC_CLS_BPF),
    ('tc', 'cls_bpf', ALL, _attach.TC_CLS_BPF), ('tc', 'tcx', ALL, _attach.TCX)])
def test_choose(mode, requested, have, expected):
    assert _attach.choose(mode, requested, have) == expected


def test_choose_forced_modern_path_missing_says_what_to_use():
    with pytest.raises(NetprobeError, match='tcx attachment is not available.*use cls_bpf or auto'):
        _attach.choose('tc', 'tcx', OLD)
    with pytest.raises(NetprobeError, match='invalid attach choice'):
        _attach.choose('xdp', 'tcx', ALL)


def test_legacy_choice_needs_no_probe():
    assert _attach.choose('tc', 'cls_bpf', None) == _attach.TC_CLS_BPF
