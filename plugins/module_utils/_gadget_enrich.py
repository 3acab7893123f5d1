# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the kernel gives as numbers, named: netns inode -> name under /run/netns,
ifindex -> interface name (in its namespace), pid -> cgroup path, kernel address ->
symbol, monotonic ns -> wall clock. Each lookup is cached and bounded."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import datetime
import os
import time

from ansible_collections.netprobe.ebpf.plugins.module_utils import _netlink

NETNS_DIR = '/run/netns'
MAX_CACHED = 4096


class Enricher:
    def __init__(self):
        self._netns = None
        self._ifnames = {}
        self._cgroups = {}
        self._syms = None
        self.clock_offset = time.time() - time.monotonic()
        try:
            self.host_netns = os.stat('/proc/1/ns/net').st_ino
        except OSError:
            self.host_netns = None

    # --- network namespaces -------------------------------------------------------------------

    def _scan_netns(self):
        found = {}
        try:
            names = os.listdir(NETNS_DIR)
        except OSError:
            names = []
        for name in names:
            try:
                found[os.stat(os.path.join(NETNS_DIR, name)).st_ino] = name
            except OSError:
                continue
        self._netns = found

    def netns_name(self, inode):
        """Name under /run/netns, 'host' for init's namespace, None when unknown."""
        if not inode:
            return None
        if self._netns is None or (inode not in self._netns and inode != self.host_netns):
            self._scan_netns()
        if inode in self._netns:
            return self._netns[inode]
        if inode == self.host_netns:
            return 'host'
        return None

    def netns_path(self, inode):
        name = self.netns_name(inode)
        if name == 'host' or not inode:
            return None
        return os.path.join(NETNS_DIR, name) if name else None

    # --- interfaces ----------------------------------------------------------------------------

    def ifname(self, ifindex, netns_inode=None, netns_path=None):
        """Interface name of ifindex in the namespace given by inode or path (default: ours)."""
        if not ifindex:
            return None
        key = (netns_inode or netns_path, ifindex)
        if key in self._ifnames:
            return self._ifnames[key]
        if len(self._ifnames) >= MAX_CACHED:
            return None
        path = netns_path or (self.netns_path(netns_inode) if netns_inode and netns_inode != self.host_netns else None)
        name = None
        try:
            with _netlink.Netns(path).iproute() as ipr:
                for link in ipr.get_links():
                    self._ifnames[(key[0], link.index)] = link.name
        except Exception:  # pylint: disable=broad-except  # a namespace that went away: the name stays unknown
            pass
        name = self._ifnames.setdefault(key, name)
        return name

    # --- processes -----------------------------------------------------------------------------

    def cgroup(self, pid):
        if not pid:
            return None
        if pid not in self._cgroups:
            if len(self._cgroups) >= MAX_CACHED:
                return None
            path = None
            try:
                with open('/proc/%d/cgroup' % pid) as f:
                    for line in f:
                        parts = line.rstrip('\n').split(':', 2)
                        if len(parts) == 3 and (parts[0] == '0' or path is None):
                            path = parts[2]
            except (IOError, OSError):
                pass
            self._cgroups[pid] = path
        return self._cgroups[pid]

    # --- kernel symbols ------------------------------------------------------------------------

    def symbol(self, addr):
        if not addr:
            return None
        if self._syms is None:
            addrs, names = [], []
            try:
                with open('/proc/kallsyms') as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) >= 3 and parts[1] in 'tTwW':
                            addrs.append(int(parts[0], 16))
                            names.append(parts[2])
            except (IOError, OSError):
                pass
            order = sorted(range(len(addrs)), key=addrs.__getitem__)
            self._syms = ([addrs[i] for i in order], [names[i] for i in order])
        addrs, names = self._syms
        i = bisect.bisect_right(addrs, addr) - 1
        if i < 0 or not addrs[i]:
            return '%#x' % addr
        return '%s+%#x' % (names[i], addr - addrs[i])

    # --- time ----------------------------------------------------------------------------------

    def wall(self, ts_ns):
        return self.clock_offset + ts_ns / 1e9

    def iso(self, ts_ns):
        return datetime.datetime.fromtimestamp(self.wall(ts_ns), datetime.timezone.utc).isoformat(
            timespec='microseconds').replace('+00:00', 'Z')
