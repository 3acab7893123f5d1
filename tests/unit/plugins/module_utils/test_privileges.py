"""The modules' privilege check: which /proc/self/status lines pass, and the message an unprivileged login gets."""

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _module

ROOT = 'Name:\tpython\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n'


def status(eff):
    return 'Name:\tpython\nUid:\t1001\t1001\t1001\t1001\nCapEff:\t%016x\nCapBnd:\t000001ffffffffff\n' % eff


@pytest.mark.parametrize('eff,missing', [
    (0x1ffffffffff, []),                                    # root
    (0, ['CAP_NET_ADMIN', 'CAP_BPF']),                      # an ssh login without become
    (1 << 12 | 1 << 39, []),                                # CAP_NET_ADMIN + CAP_BPF (5.8+), no CAP_SYS_ADMIN
    (1 << 12 | 1 << 21, []),                                # a kernel before CAP_BPF: CAP_SYS_ADMIN grants bpf()
    (1 << 39, ['CAP_NET_ADMIN']),
    (1 << 12, ['CAP_BPF']),
])
def test_missing_privileges(eff, missing):
    assert _module.missing_privileges(status(eff)) == missing


def test_root_status_and_unknown_layout_pass():
    assert _module.missing_privileges(ROOT) == []
    assert _module.missing_privileges('Name:\tpython\n') == []  # no CapEff line: the kernel answers instead


def test_message_names_the_module_the_user_and_become():
    msg = _module.privilege_message('netprobe.ebpf.ebpf_chain', ['CAP_NET_ADMIN', 'CAP_BPF'], 1001, 'npfleet')
    assert msg.startswith('netprobe.ebpf.ebpf_chain needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for bpffs)')
    assert 'npfleet (uid 1001) without CAP_NET_ADMIN and CAP_BPF' in msg
    assert '`become: true`' in msg
    assert _module.privilege_message('ebpf_facts', ['CAP_BPF'], 7, 'x').startswith('netprobe.ebpf.ebpf_facts needs')
