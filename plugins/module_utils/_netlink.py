# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Network namespaces and attachments (XDP by netlink, TC clsact + cls_bpf), through pyroute2.

The process never leaves the host mount namespace (bpffs stays visible):
pyroute2 opens the netlink socket inside the target network namespace and
hands it back, and program fds are valid process-wide.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import errno
import fcntl
import importlib.util
import os
import stat
import struct
import sys
import traceback

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._state import check_name


def _pyroute2_package_unexecuted():
    """Register pyroute2's package without running its __init__, which imports every netlink family pyroute2 has
    (conntrack, nl80211, ndb, ipvs...; 50 ms here, a second in a TCG guest) for runs that use rtnetlink alone.
    The submodules imported below resolve through the package's __path__ as usual. A process that imported the
    whole package before keeps it."""
    if 'pyroute2' in sys.modules:
        return
    spec = importlib.util.find_spec('pyroute2')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('No module named pyroute2')
    sys.modules['pyroute2'] = importlib.util.module_from_spec(spec)


PYROUTE2_IMPORT_ERROR = None
try:
    _pyroute2_package_unexecuted()
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
except ImportError:
    PYROUTE2_IMPORT_ERROR = traceback.format_exc()
    IPRoute = None

    class NetlinkError(Exception):
        pass

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4
XDP_MODE_FLAGS = {'skb': XDP_FLAGS_SKB_MODE, 'native': XDP_FLAGS_DRV_MODE}
XDP_ATTACHED_MODES = {'xdpgeneric': 'skb', 'xdp': 'native', 'xdpdrv': 'native', 'xdpoffload': 'offload'}

TC_H_CLSACT = 0xFFFFFFF1
TC_PARENTS = {'ingress': 0xFFFFFFF2, 'egress': 0xFFFFFFF3}
# Our own filter slot on each clsact hook; anything else there is foreign and left alone.
TC_PRIO = 0x4E50
TC_HANDLE = 0x4E50
TC_HOLD_PRIO = 0x4E4F  # an XDP chain's stand-in during a mode switch (runs before a TC chain of ours)
TCA_BPF_NAME = 7
TCA_BPF_ID = 11
ETH_P_ALL = 0x0003


class Netns:
    """The target network namespace: None (the module's own), a name under /run/netns, or a path."""

    def __init__(self, spec=None):
        self.spec = spec
        if not spec:
            self.path = '/proc/self/ns/net'
        elif spec.startswith('/'):
            self.path = spec
        else:
            self.path = os.path.join('/run/netns', check_name('network namespace name', spec))
        self.inode = check_netns_path(spec, self.path)

    @property
    def label(self):
        return self.spec or 'host'

    def iproute(self):
        """An rtnetlink socket of this namespace. Opened with this thread inside the namespace (a socket
        stays in the namespace it was made in), not with IPRoute(netns=...), which forks a helper
        process for it: 10 ms per chain."""
        if IPRoute is None:
            raise NetprobeError('pyroute2 is not importable')
        with in_netns(self):
            return IPRoute()


@contextlib.contextmanager
def in_netns(netns):
    """Run the block with this thread in the target network namespace (mount namespace unchanged)."""
    if not netns.spec:
        yield
        return
    libc = _bpf.libc()
    home = os.open('/proc/self/ns/net', os.O_RDONLY)
    target = os.open(netns.path, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetprobeError('cannot enter network namespace %s: %s' % (netns.label, os.strerror(err)))
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - would leave the process astray
                raise NetprobeError('cannot return to the original network namespace: %s'
                                    % os.strerror(ctypes.get_errno()))
    finally:
        os.close(target)
        os.close(home)


NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)
CLONE_NEWNET = 0x40000000


def check_netns_path(spec, path):
    """Inode of the network namespace at path; a clear error when path is missing or is something else."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise NetprobeError('network namespace %r not found (no %s): create it first, or fix `netns`'
                                % (spec, path))
        raise NetprobeError('network namespace %r: cannot stat %s: %s' % (spec, path, e.strerror))
    if not stat.S_ISREG(st.st_mode):
        raise NetprobeError('netns %r: %s is not a network namespace (it is not a namespace file at all): give a '
                            'name under /run/netns or a path such as /proc/PID/ns/net' % (spec, path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0))
    except OSError as e:
        raise NetprobeError('netns %r: cannot open %s: %s' % (spec, path, e.strerror))
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as e:
        if e.errno == errno.ENOTTY:
            raise NetprobeError('netns %r: %s is not a network namespace (not an nsfs file): give a name under '
                                '/run/netns or a path such as /proc/PID/ns/net' % (spec, path))
        raise NetprobeError('netns %r: cannot ask the kernel what %s is: %s' % (spec, path, e.strerror))
    finally:
        os.close(fd)
    if nstype != CLONE_NEWNET:
        raise NetprobeError('netns %r: %s is a namespace, but not a network namespace (type 0x%x): use '
                            '/proc/PID/ns/net, not another ns/ entry' % (spec, path, nstype))
    return st.st_ino


def link_index(ipr, ifname, netns):
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise NetprobeError('interface %r not found in network namespace %s: check `interface` and `netns`'
                            % (ifname, netns.label))
    return found[0]


def xdp_query(ipr, ifindex):
    """(prog id, mode) of the XDP program on the interface, (0, None) when none."""
    link = ipr.link('get', index=ifindex)[0]
    xdp = link.get_attr('IFLA_XDP')
    if not xdp:
        return 0, None
    prog_id = xdp.get_attr('IFLA_XDP_PROG_ID') or 0
    return prog_id, XDP_ATTACHED_MODES.get(xdp.get_attr('IFLA_XDP_ATTACHED'))


def xdp_attach(ipr, ifindex, fd, mode, expected_fd=None):
    """Attach fd; with expected_fd, swap atomically only if expected_fd is what is attached now."""
    flags = XDP_MODE_FLAGS[mode]
    attrs = [['IFLA_XDP_FD', fd]]
    if expected_fd is None:
        flags |= XDP_FLAGS_UPDATE_IF_NOEXIST
    else:
        flags |= XDP_FLAGS_REPLACE
        attrs.append(['IFLA_XDP_EXPECTED_FD', expected_fd])
    attrs.append(['IFLA_XDP_FLAGS', flags])
    try:
        ipr.link('set', index=ifindex, IFLA_XDP={'attrs': attrs})
    except NetlinkError as e:
        if e.code == 16 and expected_fd is None:
            raise NetprobeError('another XDP program is attached to this interface: netprobe does not replace '
                                'programs it did not attach (detach it first)')
        if e.code in (95, 22) and mode == 'native':
            raise NetprobeError('native XDP is not supported on this interface (%s): use xdp_mode: skb' % e)
        raise NetprobeError('XDP attach failed: %s' % (e,))


def xdp_detach(ipr, ifindex, mode, expected_fd):
    attrs = [['IFLA_XDP_FD', -1], ['IFLA_XDP_EXPECTED_FD', expected_fd],
             ['IFLA_XDP_FLAGS', XDP_MODE_FLAGS[mode] | XDP_FLAGS_REPLACE]]
    ipr.link('set', index=ifindex, IFLA_XDP={'attrs': attrs})


def _filters(ipr, ifindex, hook):
    try:
        return [f for f in ipr.get_filters(ifindex, parent=TC_PARENTS[hook]) if f.get_attr('TCA_OPTIONS')]
    except NetlinkError:
        return []


def _tc_prog_id(tc_filter):
    """TCA_BPF_ID of a cls_bpf filter (pyroute2 does not decode it)."""
    opts = tc_filter.get_attr('TCA_OPTIONS')
    raw = bytes(opts.data[opts.offset:opts.offset + opts.length])
    pos = 4
    while pos + 8 <= len(raw):
        length, nla_type = struct.unpack_from('=HH', raw, pos)
        if nla_type & 0x3FFF == TCA_BPF_ID:
            return struct.unpack_from('=I', raw, pos + 4)[0]
        pos += max((length + 3) & ~3, 4)
    return 0


def _tc_bpf_attrs(tc_filter):
    """(program id, name) of a cls_bpf filter, from the raw TCA_OPTIONS (pyroute2 decodes neither)."""
    opts = tc_filter.get_attr('TCA_OPTIONS')
    raw = bytes(opts.data[opts.offset:opts.offset + opts.length])
    prog_id, name, pos = 0, '', 4
    while pos + 4 <= len(raw):
        length, nla_type = struct.unpack_from('=HH', raw, pos)
        if length < 4:
            break
        if nla_type & 0x3FFF == TCA_BPF_ID and length >= 8:
            prog_id = struct.unpack_from('=I', raw, pos + 4)[0]
        elif nla_type & 0x3FFF == TCA_BPF_NAME:
            name = raw[pos + 4:pos + length].split(b'\0', 1)[0].decode(errors='replace')
        pos += (length + 3) & ~3
    return prog_id, name


def tc_filters(ipr, ifindex, hook):
    """Every bpf filter on a clsact hook, ours included: [(priority, handle, program id, name)]."""
    out = []
    for f in _filters(ipr, ifindex, hook):
        if f.get_attr('TCA_KIND') != 'bpf':
            continue
        prog_id, name = _tc_bpf_attrs(f)
        out.append((f['info'] >> 16, f['handle'], prog_id, name))
    return out


def _is_ours(tc_filter, prio=TC_PRIO):
    return (tc_filter['info'] >> 16) == prio and tc_filter['handle'] == prio


def tc_query(ipr, ifindex, hook, prio=TC_PRIO):
    """Program id of our filter on a clsact hook, 0 when it is not there (other filters are not ours).
    prio: our filter's priority, which is also its handle."""
    return next((_tc_prog_id(f) for f in _filters(ipr, ifindex, hook) if _is_ours(f, prio)), 0)


def has_clsact(ipr, ifindex):
    return any(q.get_attr('TCA_KIND') == 'clsact' for q in ipr.get_qdiscs(ifindex))


def tc_attach(ipr, ifindex, hook, fd, name, prio=TC_PRIO):
    """Create clsact if missing; then add, or atomically replace, our filter. Returns True if clsact was created."""
    created = False
    if not has_clsact(ipr, ifindex):
        ipr.tc('add', 'clsact', ifindex)
        created = True
    try:
        ipr.tc('replace-filter', 'bpf', ifindex, prio, fd=fd, name=name, parent=TC_PARENTS[hook],
               prio=prio, protocol=ETH_P_ALL, direct_action=True)
    except NetlinkError as e:
        raise NetprobeError('TC attach failed: %s' % (e,))
    return created


def tc_detach(ipr, ifindex, hook, remove_clsact, prio=TC_PRIO):
    """Remove our filter; remove clsact too when asked and nothing else uses it. True if clsact went."""
    try:
        ipr.tc('del-filter', 'bpf', ifindex, prio, parent=TC_PARENTS[hook], prio=prio, protocol=ETH_P_ALL)
    except NetlinkError as e:
        if e.code not in (2, 22):
            raise
    if remove_clsact and not _filters(ipr, ifindex, 'ingress') and not _filters(ipr, ifindex, 'egress'):
        try:
            ipr.tc('del', 'clsact', ifindex)
            return True
        except NetlinkError:
            pass
    return False
