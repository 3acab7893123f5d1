# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Network namespaces and attachments (XDP by netlink, TC clsact + cls_bpf), through _rtnl (pyroute2 for writes).

The process never leaves the host mount namespace (bpffs stays visible): the thread enters the target
network namespace only to open its netlink sockets there (ours for reads, pyroute2's on the first write),
and program fds are valid process-wide.
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
import sys
import traceback

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _rtnl
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._state import check_name

NetlinkError = _rtnl.NetlinkError


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


def pyroute2_missing():
    """Why pyroute2 cannot be used (a traceback), None when it can: found without importing it (its import costs
    about 100 ms here, seconds in a TCG guest, and only runs that write to netlink pay it)."""
    try:
        if importlib.util.find_spec('pyroute2') is None:
            raise ImportError('No module named pyroute2')
    except ImportError:
        return traceback.format_exc()
    return None


def _pyroute2():
    """(IPRoute, pyroute2's NetlinkError), imported on the first netlink write."""
    _pyroute2_package_unexecuted()
    from pyroute2.iproute.linux import IPRoute  # pylint: disable=import-outside-toplevel
    from pyroute2.netlink.exceptions import NetlinkError as Pyroute2NetlinkError  # pylint: disable=import-outside-toplevel
    return IPRoute, Pyroute2NetlinkError


XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4
XDP_MODE_FLAGS = {'skb': XDP_FLAGS_SKB_MODE, 'native': XDP_FLAGS_DRV_MODE}

TC_H_CLSACT = 0xFFFFFFF1
TC_PARENTS = {'ingress': 0xFFFFFFF2, 'egress': 0xFFFFFFF3}
# Our own filter slot on each clsact hook; anything else there is foreign and left alone.
TC_PRIO = 0x4E50
TC_HANDLE = 0x4E50
TC_HOLD_PRIO = 0x4E4F  # an XDP chain's stand-in during a mode switch (runs before a TC chain of ours)
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
        """The rtnetlink socket of this namespace (_rtnl.Rtnl). Opened with this thread inside the namespace
        (a socket stays in the namespace it was made in), and so is pyroute2's for the writes, not with
        IPRoute(netns=...), which forks a helper process for it: 10 ms per chain."""
        with in_netns(self):
            return _rtnl.Rtnl(self._open_writer)

    def _open_writer(self):
        try:
            ipr_class, error_class = _pyroute2()
        except ImportError as e:
            raise NetprobeError('pyroute2 is not importable (%s): install it on the target (the prereqs role does)' % e)
        with in_netns(self):
            return ipr_class(), error_class


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
    link = ipr.get_link(ifindex)
    return (link.xdp_prog_id, link.xdp_mode) if link.xdp_prog_id else (0, None)


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
        return ipr.get_filters(ifindex, TC_PARENTS[hook])
    except NetlinkError:
        return []


def tc_filters(ipr, ifindex, hook):
    """Every bpf filter on a clsact hook, ours included: [(priority, handle, program id, name)]."""
    return [(f.prio, f.handle, f.prog_id, f.name) for f in _filters(ipr, ifindex, hook) if f.kind == 'bpf']


def tc_query(ipr, ifindex, hook, prio=TC_PRIO):
    """Program id of our filter on a clsact hook, 0 when it is not there (other filters are not ours).
    prio: our filter's priority, which is also its handle."""
    return next((f.prog_id for f in _filters(ipr, ifindex, hook) if f.prio == prio and f.handle == prio), 0)


def has_clsact(ipr, ifindex):
    return 'clsact' in ipr.get_qdiscs(ifindex)


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
