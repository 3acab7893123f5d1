# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Chains whose network namespace is gone: only their pins and metadata are left.

When a namespace goes, its interfaces and attachments go with it; what netprobe
left in bpffs and under /run is found by the namespace's inode (the chain's
netns_id) and removed here, by the path rules of _state.ChainPaths. Inodes are
reused, so the leftovers are removed only when their metadata still names the
namespace the caller says they belong to, and no live namespace has that inode
under that name.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.netprobe.ebpf.plugins.module_utils import _netlink, _persist, _state
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


def netns_alive(spec, netns_id):
    """True when spec (None: the host's) names a live network namespace whose inode is netns_id."""
    try:
        return _netlink.Netns(spec).inode == netns_id
    except NetprobeError:
        return False


def remove(netns_id, netns, interface, mode, hook, check_mode=False):
    """Remove the leftovers of the chain (netns_id, interface, mode-hook). Returns the result dict."""
    if not isinstance(netns_id, int) or netns_id <= 0:
        raise NetprobeError('netns_id must be the inode number of the chain\'s network namespace (ebpf_facts '
                            'reports it as netns_id)')
    paths = _state.ChainPaths(netns_id, interface, '%s-%s' % (mode, hook))
    with _state.HostLock():
        state = _state.load_state(paths.state_file)
        # its record too, when the namespace had a name: the chain is not wanted back when a namespace of that name
        # appears again
        record = None
        if netns and not netns.startswith('/'):
            record = os.path.join(_persist.key_dir('netns', _state.check_name('network namespace name', netns)),
                                  _state.check_ifname(interface), '%s-%s.json' % (mode, hook))
        present = [p for p in (paths.pin_dir, paths.state_file, record) if p and os.path.lexists(p)]
        if state is not None and (state.get('netns') or None) != (netns or None):
            raise NetprobeError('the chain recorded under netns_id %d belongs to network namespace %r, not %r: '
                                'namespace inodes are reused, so nothing was removed' % (netns_id, state.get('netns'),
                                                                                         netns))
        result = dict(changed=bool(present), removed=present,
                      chain={'interface': interface, 'netns': netns or 'host', 'netns_id': netns_id, 'hook': hook,
                             'mode': mode, 'attached': False, 'probes': [], 'pin_dir': paths.pin_dir},
                      compiled=[], drift=[], diff=dict(before={'probes': [r['name'] for r in (state or {}).get(
                          'probes', [])]}, after={'probes': []}))
        if check_mode or not present:
            return result
        _state.remove_tree(paths.pin_dir)
        _state.delete_state(paths.state_file)
        if record:
            _persist.remove(record)
        _state.mark(paths.clsact_marker, False)
        _state.prune_empty_parents(paths.clsact_marker, os.path.join(_state.RUN_ROOT, 'clsact'))
        return result
