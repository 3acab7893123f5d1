# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The head attachment of a chain: how the hook reaches the chain's first program.

One interface, one class per kernel path:

=============  =====================================================  =======================
path           how                                                    kernel
=============  =====================================================  =======================
xdp-netlink    IFLA_XDP on the interface (XDP_FLAGS_REPLACE swaps)     every kernel
xdp-link       BPF_LINK_CREATE(BPF_XDP), pinned; BPF_LINK_UPDATE       5.9+
tc-cls_bpf     clsact + cls_bpf direct-action filter, our prio/handle  every kernel
tcx            BPF_LINK_CREATE(BPF_TCX_INGRESS/EGRESS), pinned,        6.6+
               a declared place (first, last, before/after a program)
=============  =====================================================  =======================

Every class has ``attach(fd)``, ``replace(new_fd, expected_fd)`` (atomic: the hook runs the old
program or the new one, never neither), ``detach()``, ``query()`` (a :class:`HeadState`),
``foreign()`` (the other programs on the same hook, never touched) and ``describe()`` for facts.

Links are pinned at ``link_pin`` (in the chain's pin directory) so that they outlive the module
process; a link is detached when its pin (the last reference) goes or by BPF_LINK_DETACH.
bpf(2) resolves an ifindex in the calling thread's network namespace: link creation and
queries enter the chain's namespace for the call (setns, network namespace only, so bpffs stays
visible) and come back.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Union

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _limits, _netlink, _state
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

XDP_NETLINK = 'xdp-netlink'
XDP_LINK = 'xdp-link'
TC_CLS_BPF = 'tc-cls_bpf'
TCX = 'tcx'
PATHS = (XDP_NETLINK, XDP_LINK, TC_CLS_BPF, TCX)

# module option values -> paths
XDP_CHOICES = {'netlink': XDP_NETLINK, 'link': XDP_LINK}
TC_CHOICES = {'cls_bpf': TC_CLS_BPF, 'tcx': TCX}

LIBXDP_DISPATCHER = 'xdp_dispatcher'
ENOTSUPP = 524
_TCX_ATTACH = {'ingress': _bpf.ATTACH_TCX_INGRESS, 'egress': _bpf.ATTACH_TCX_EGRESS}


# --- records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """Where a TCX head goes among the hook's programs: first, last, or before/after a program
    given by id (int) or by name (str, must match exactly one program on the hook)."""
    where: str = 'last'
    ref: Union[int, str, None] = None

    @classmethod
    def parse(cls, value):
        """From a module option: 'first' | 'last' | {'before': id|name} | {'after': id|name}."""
        if value is None or value in ('first', 'last'):
            return cls(value or 'last')
        if isinstance(value, dict) and len(value) == 1:
            (where, ref), = value.items()
            if where in ('before', 'after') and isinstance(ref, (int, str)) and ref != '':
                if isinstance(ref, str) and ref.isdigit():
                    ref = int(ref)
                return cls(where, ref)
        raise NetprobeError('invalid tc_position %r: use first, last, {before: <program id or name>} '
                            'or {after: <program id or name>}' % (value,))

    def label(self):
        return self.where if self.ref is None else '%s %s' % (self.where, self.ref)


@dataclass
class Program:
    """A program on a hook, ours or foreign."""
    prog_id: int
    name: str
    kind: str                  # xdp, xdp_dispatcher, tcx, cls_bpf
    link_id: int = 0           # the bpf_link holding it (0: attached without a link)
    position: Optional[int] = None   # index in the hook's run order (TCX)
    priority: Optional[int] = None   # cls_bpf filter priority (lower runs first)
    handle: Optional[int] = None     # cls_bpf filter handle

    def as_dict(self):
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class HeadState:
    """What the kernel says about a chain's head attachment."""
    path: str
    prog_id: int = 0           # the program our attachment runs (0: none)
    link_id: int = 0           # our link (link paths)
    link_pinned: bool = False  # our link's pin exists
    link_detached: bool = False  # pinned link whose hook is gone (LINK_DETACH, interface deleted)
    hook_prog_id: int = 0      # what the hook runs at the place we hold (XDP: netlink's program id)
    position: Optional[int] = None   # our index in the hook's run order (TCX)
    mode: Optional[str] = None       # XDP: skb | native
    foreign: List[Program] = field(default_factory=list)

    @property
    def attached(self):
        return bool(self.prog_id) and not self.link_detached

    def as_dict(self):
        out = {'path': self.path, 'prog_id': self.prog_id, 'attached': self.attached,
               'link_id': self.link_id, 'link_pinned': self.link_pinned, 'link_detached': self.link_detached,
               'foreign': [p.as_dict() for p in self.foreign]}
        if self.position is not None:
            out['position'] = self.position
        if self.mode is not None:
            out['mode'] = self.mode
        return out


@dataclass
class Target:
    """The hook a head attaches to."""
    netns: '_netlink.Netns'
    ipr: object                # pyroute2 IPRoute inside netns
    ifindex: int
    ifname: str
    hook: str                  # ingress | egress
    link_pin: str              # where a link path pins its link
    xdp_mode: str = 'skb'      # skb | native
    position: Position = Position()
    filter_name: str = 'netprobe'   # cls_bpf filter name
    clsact_marker: Optional[str] = None  # file present while netprobe owns the clsact qdisc
    own_name: Optional[str] = None  # XDP by netlink: a program of another name there is foreign


# --- helpers --------------------------------------------------------------------------------------


def _prog_name(prog_id):
    try:
        fd = _bpf.prog_fd_by_id(prog_id)
    except OSError:
        return ''
    try:
        return _bpf.prog_info(fd)['name']
    finally:
        os.close(fd)


def _prog_id(fd):
    return _bpf.prog_info(fd)['id']


def _open_pin(path):
    try:
        return _bpf.obj_get(path)
    except OSError:
        return None


def xdp_link_of(ifindex, prog_id):
    """The id of an XDP bpf_link running prog_id on ifindex, 0 when prog_id is attached by netlink.
    (Link ids are global; ifindex and the globally unique program id together pin it down.)"""
    link_id = 0
    while True:
        link_id = _bpf.link_next_id(link_id)
        if not link_id:
            return 0
        try:
            fd = _bpf.link_fd_by_id(link_id)
        except OSError:
            continue
        try:
            info = _bpf.link_info(fd)
        finally:
            os.close(fd)
        if info['type'] == 'xdp' and info['ifindex'] == ifindex and info['prog_id'] == prog_id:
            return link_id


# --- the paths ------------------------------------------------------------------------------------


class HeadAttachment:
    """Base of the four paths. Subclasses implement the kernel calls."""
    path = None
    uses_link = False

    def __init__(self, target):
        self.t = target

    def attach(self, fd):
        raise NotImplementedError

    def replace(self, new_fd, expected_fd):
        raise NotImplementedError

    def detach(self):
        raise NotImplementedError

    def query(self):
        raise NotImplementedError

    def foreign(self):
        return self.query().foreign

    def describe(self):
        return self.query().as_dict()

    # links: shared by xdp-link and tcx
    def _link_state(self, state):
        fd = _open_pin(self.t.link_pin)
        if fd is None:
            return None
        try:
            info = _bpf.link_info(fd)
        finally:
            os.close(fd)
        state.link_pinned = True
        state.link_id = info['id']
        state.prog_id = info['prog_id']
        state.link_detached = info['ifindex'] == 0
        return info

    def _link_replace(self, new_fd, expected_fd):
        fd = _open_pin(self.t.link_pin)
        if fd is None:
            raise NetprobeError('the %s head link of %s (%s) is gone: nothing to update; the next run '
                                'reattaches it' % (self.path, self.t.ifname, self.t.link_pin))
        try:
            _bpf.link_update(fd, new_fd, expected_fd)
        except _bpf.BpfError as e:
            if e.errno == errno.EPERM:
                raise NetprobeError('%s head of %s changed under us (the link no longer runs the expected '
                                    'program): nothing was swapped; rerun to observe it again'
                                    % (self.path, self.t.ifname))
            raise NetprobeError('%s head update on %s failed: %s' % (self.path, self.t.ifname, e))
        finally:
            os.close(fd)

    def _link_detach(self):
        fd = _open_pin(self.t.link_pin)
        if fd is None:
            return
        try:
            _bpf.link_detach(fd)
        except _bpf.BpfError as e:
            if e.errno not in (errno.ENOLINK, errno.EINVAL, errno.ENOENT):
                raise
        finally:
            os.close(fd)
        _state.unpin(self.t.link_pin)

    def _pin_link(self, link_fd):
        try:
            os.makedirs(os.path.dirname(self.t.link_pin), mode=0o700, exist_ok=True)
            _state.unpin(self.t.link_pin)  # a defunct link left by a detach by hand
            _bpf.obj_pin(link_fd, self.t.link_pin)
        finally:
            os.close(link_fd)  # the pin holds it now (or, when pinning failed, nothing does: detached)


class XdpNetlink(HeadAttachment):
    """IFLA_XDP by netlink: no link; a stray `ip link set dev X xdp off` detaches it."""
    path = XDP_NETLINK

    def _current(self):
        return _netlink.xdp_query(self.t.ipr, self.t.ifindex)

    def attach(self, fd):
        prog_id, _mode = self._current()
        if prog_id:
            raise occupied_error(self.t, prog_id)
        _netlink.xdp_attach(self.t.ipr, self.t.ifindex, fd, self.t.xdp_mode)

    def replace(self, new_fd, expected_fd):
        _netlink.xdp_attach(self.t.ipr, self.t.ifindex, new_fd, self.t.xdp_mode, expected_fd=expected_fd)

    def detach(self):
        state = self.query()
        if not state.prog_id:  # nothing, or not ours: never detach a foreign program
            return
        fd = _bpf.prog_fd_by_id(state.prog_id)
        try:
            _netlink.xdp_detach(self.t.ipr, self.t.ifindex, state.mode or self.t.xdp_mode, fd)
        finally:
            os.close(fd)

    def query(self):
        prog_id, mode = self._current()
        state = HeadState(self.path, mode=mode, hook_prog_id=prog_id)
        if prog_id:
            if xdp_link_of(self.t.ifindex, prog_id) or (self.t.own_name and _prog_name(prog_id) != self.t.own_name):
                state.foreign.append(_xdp_program(self.t.ifindex, prog_id))
            else:
                state.prog_id = prog_id
        return state


class XdpLink(HeadAttachment):
    """BPF_LINK_CREATE(BPF_XDP): netlink cannot remove or replace it (EBUSY)."""
    path = XDP_LINK
    uses_link = True

    def attach(self, fd):
        prog_id, _mode = _netlink.xdp_query(self.t.ipr, self.t.ifindex)
        if prog_id:
            raise occupied_error(self.t, prog_id)
        flags = _netlink.XDP_MODE_FLAGS[self.t.xdp_mode]
        try:
            with _netlink.in_netns(self.t.netns):
                link_fd = _bpf.link_create(fd, self.t.ifindex, _bpf.ATTACH_XDP, flags)
        except _bpf.BpfError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, ENOTSUPP) and self.t.xdp_mode == 'native':
                raise NetprobeError('native XDP is not supported on %s (%s): use xdp_mode: skb' % (self.t.ifname, e))
            raise NetprobeError('XDP link on %s failed: %s' % (self.t.ifname, e))
        self._pin_link(link_fd)

    def replace(self, new_fd, expected_fd):
        self._link_replace(new_fd, expected_fd)

    def detach(self):
        self._link_detach()

    def query(self):
        prog_id, mode = _netlink.xdp_query(self.t.ipr, self.t.ifindex)
        state = HeadState(self.path, mode=mode, hook_prog_id=prog_id)
        info = self._link_state(state)
        if info is not None and not state.link_detached and info['ifindex'] != self.t.ifindex:
            state.link_detached = True  # a link of a former interface of that name
        if prog_id and prog_id != state.prog_id:
            state.foreign.append(_xdp_program(self.t.ifindex, prog_id))
        return state


class TcClsBpf(HeadAttachment):
    """clsact + a cls_bpf direct-action filter at netprobe's own priority and handle."""
    path = TC_CLS_BPF

    def attach(self, fd):
        self.replace(fd, None)

    def replace(self, new_fd, expected_fd):
        # cls_bpf swaps the program of a filter at a fixed prio/handle under RCU: atomic
        created = _netlink.tc_attach(self.t.ipr, self.t.ifindex, self.t.hook, new_fd, self.t.filter_name)
        if created and self.t.clsact_marker:
            _mark(self.t.clsact_marker, True)

    def detach(self):
        owned = bool(self.t.clsact_marker) and os.path.exists(self.t.clsact_marker)
        if _netlink.tc_detach(self.t.ipr, self.t.ifindex, self.t.hook, owned) and self.t.clsact_marker:
            _mark(self.t.clsact_marker, False)

    def query(self):
        state = HeadState(self.path)
        for prio, handle, prog_id, name in _netlink.tc_filters(self.t.ipr, self.t.ifindex, self.t.hook):
            if prio == _netlink.TC_PRIO and handle == _netlink.TC_HANDLE:
                state.prog_id = state.hook_prog_id = prog_id
            else:
                state.foreign.append(Program(prog_id, name or _prog_name(prog_id), 'cls_bpf',
                                             priority=prio, handle=handle))
        state.foreign.extend(tcx_programs(self.t, exclude_link=0))
        return state


class Tcx(HeadAttachment):
    """BPF_LINK_CREATE(BPF_TCX_INGRESS/EGRESS) at a declared place among the hook's programs."""
    path = TCX
    uses_link = True

    def _attach_type(self):
        return _TCX_ATTACH[self.t.hook]

    def _placement(self):
        """(flags, relative id) for the declared position, resolved against the hook's programs now."""
        pos = self.t.position
        if pos.where == 'first':
            return _bpf.BPF_F_BEFORE, 0
        if pos.ref is None:  # last
            return _bpf.BPF_F_AFTER, 0
        programs = tcx_programs(self.t, exclude_link=0)
        if isinstance(pos.ref, int):
            match = [p for p in programs if p.prog_id == pos.ref]
        else:
            match = [p for p in programs if p.name == pos.ref]
        if len(match) != 1:
            present = ', '.join('%s (id %d)' % (p.name, p.prog_id) for p in programs) or 'none'
            raise NetprobeError('tc_position %s: %s on TCX %s of %s; programs there: %s'
                                % (pos.label(), 'no such program' if not match else 'more than one program matches',
                                   self.t.hook, self.t.ifname, present))
        flag = _bpf.BPF_F_BEFORE if pos.where == 'before' else _bpf.BPF_F_AFTER
        return flag | _bpf.BPF_F_ID, match[0].prog_id

    def attach(self, fd):
        flags, relative = self._placement()
        try:
            with _netlink.in_netns(self.t.netns):
                link_fd = _bpf.link_create(fd, self.t.ifindex, self._attach_type(), flags, relative)
        except _bpf.BpfError as e:
            raise NetprobeError('TCX %s link on %s failed: %s' % (self.t.hook, self.t.ifname, e))
        self._pin_link(link_fd)

    def replace(self, new_fd, expected_fd):
        self._link_replace(new_fd, expected_fd)  # a link update keeps the link's place

    def detach(self):
        self._link_detach()

    def query(self):
        state = HeadState(self.path)
        self._link_state(state)
        programs = tcx_programs(self.t, exclude_link=0)
        for p in programs:
            if state.link_id and p.link_id == state.link_id:
                state.position = p.position
                state.hook_prog_id = p.prog_id
            else:
                state.foreign.append(p)
        if state.link_pinned and state.position is None:
            state.link_detached = True
        for prio, handle, prog_id, name in _netlink.tc_filters(self.t.ipr, self.t.ifindex, self.t.hook):
            state.foreign.append(Program(prog_id, name or _prog_name(prog_id), 'cls_bpf', priority=prio, handle=handle))
        return state


CLASSES = {XDP_NETLINK: XdpNetlink, XDP_LINK: XdpLink, TC_CLS_BPF: TcClsBpf, TCX: Tcx}


# --- foreign programs -----------------------------------------------------------------------------


def _xdp_program(ifindex, prog_id):
    name = _prog_name(prog_id)
    kind = 'xdp_dispatcher' if name == LIBXDP_DISPATCHER else 'xdp'
    return Program(prog_id, name, kind, link_id=xdp_link_of(ifindex, prog_id))


def tcx_programs(target, exclude_link=0):
    """Programs on the TCX hook in run order (empty before 6.6, where there is no TCX)."""
    try:
        with _netlink.in_netns(target.netns):
            prog_ids, link_ids, _rev = _bpf.prog_query(target.ifindex, _TCX_ATTACH[target.hook])
    except _bpf.BpfError:
        return []
    return [Program(pid, _prog_name(pid), 'tcx', link_id=lid, position=i)
            for i, (pid, lid) in enumerate(zip(prog_ids, link_ids)) if not exclude_link or lid != exclude_link]


def occupied_error(target, prog_id):
    prog = _xdp_program(target.ifindex, prog_id)
    if prog.kind == 'xdp_dispatcher':
        what = ("a libxdp multi-program dispatcher (xdp_dispatcher, id %d): netprobe does not join libxdp's "
                "dispatcher; load netprobe's chain through libxdp/xdp-loader instead, attach netprobe on TC, "
                "or unload the dispatcher (xdp-loader unload %s --all)" % (prog_id, target.ifname))
    else:
        what = ('%s XDP program %r (id %d%s) that netprobe did not attach: XDP has one program per interface '
                'and netprobe never replaces a foreign one; detach it first, or put the chain on TC'
                % ('a bpf_link' if prog.link_id else 'an', prog.name, prog_id,
                   ', link %d' % prog.link_id if prog.link_id else ''))
    return NetprobeError('interface %s already has %s' % (target.ifname, what), foreign=[prog.as_dict()])


def _mark(path, present):
    if present:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, 'w'):
            pass
    else:
        _state.unpin(path)


# --- choosing a path ------------------------------------------------------------------------------


PATHS_CACHE = os.path.join(_state.RUN_ROOT, 'attach-paths.json')
_PATHS = {}  # this process's answer


def kernel_paths():
    """The attach paths this kernel has, tried for real in a throwaway network namespace (about 0.1 s:
    a namespace and a veth pair made and destroyed) once per boot: the answer is kept in PATHS_CACHE
    for this boot and kernel, and in this process."""
    if not _PATHS:
        boot = _boot_id()
        cached = _cached_paths(boot)
        if cached is None:
            cached = _probe_paths()
            # kept unless the trial itself failed (no namespace, no answer): that one is tried again
            if boot and 'attach' not in cached[1]:
                try:
                    _state.save_state(PATHS_CACHE, {'boot_id': boot, 'release': os.uname().release,
                                                    'have': cached[0], 'errors': cached[1]})
                except OSError:
                    pass  # a read-only /run: every run tries the kernel, as before
        _PATHS['answer'] = cached
    return _PATHS['answer']


def _probe_paths():
    from ansible_collections.netprobe.ebpf.plugins.module_utils import _capabilities  # pylint: disable=import-outside-toplevel
    found, errors = _capabilities.probe_attachments()
    have = {XDP_NETLINK: bool(found.get('xdp_generic') or found.get('xdp_native')),
            XDP_LINK: bool(found.get('xdp_link')),
            TC_CLS_BPF: bool(found.get('tc_clsact')),
            TCX: bool(found.get('tcx'))}
    return have, errors


def _boot_id():
    try:
        return _limits.read_proc('/proc/sys/kernel/random/boot_id').strip()
    except (NetprobeError, OSError):
        return None


def _cached_paths(boot):
    """(have, errors) kept by an earlier run of this boot and kernel, or None (none, stale or damaged)."""
    if not boot:
        return None
    try:
        data = json.loads(_limits.read_bounded(PATHS_CACHE, 64 * 1024, 'attach paths cache').decode())
    except (NetprobeError, ValueError, UnicodeError):
        return None
    if not isinstance(data, dict) or data.get('boot_id') != boot or data.get('release') != os.uname().release:
        return None
    have, errors = data.get('have'), data.get('errors')
    if not isinstance(have, dict) or set(have) != {XDP_NETLINK, XDP_LINK, TC_CLS_BPF, TCX} \
            or not all(isinstance(v, bool) for v in have.values()) or not isinstance(errors, dict):
        return None
    return have, errors


def choose(mode, requested='auto', have=None):
    """The path for a chain: mode xdp|tc, requested auto or an option value (see XDP_CHOICES /
    TC_CHOICES). `have` is kernel_paths()[0] (probed when None and needed)."""
    choices = XDP_CHOICES if mode == 'xdp' else TC_CHOICES
    modern, legacy = (XDP_LINK, XDP_NETLINK) if mode == 'xdp' else (TCX, TC_CLS_BPF)
    if requested not in ('auto',) + tuple(choices):
        raise NetprobeError('invalid attach choice %r for %s: use auto or one of %s'
                            % (requested, mode, ', '.join(sorted(choices))))
    if requested != 'auto' and choices[requested] == legacy:
        return legacy
    if have is None:
        have = kernel_paths()[0]
    if have.get(modern):
        return modern
    if requested != 'auto':
        raise NetprobeError('%s attachment is not available on this kernel (%s): use %s or auto'
                            % (modern, os.uname().release,
                               next(k for k, v in choices.items() if v == legacy)))
    return legacy


def make(path, target):
    return CLASSES[path](target)


def observe_path(target, mode):
    """Which path (if any) holds our head now, from the kernel alone: a pinned live link is a link path,
    otherwise our netlink program / our cls_bpf filter. None when nothing of ours is attached."""
    if mode == 'xdp':
        for path in (XDP_LINK, XDP_NETLINK):
            if make(path, target).query().attached:
                return path
    else:
        for path in (TCX, TC_CLS_BPF):
            if make(path, target).query().attached:
                return path
    return None


# --- the chain's view: one head, whichever path holds it ------------------------------------------

HEAD_LINK = 'head_link'  # file name of a link pin in the chain's pin directory (bpffs: no dots)


class ChainHead:
    """The head of one chain, as the chain engine needs it: observe what holds it (and drift), set it
    (attach, atomic replace, or migrate between paths: new attachment first, then the old one
    removed), describe it for facts. `requested` is the module option (auto or a path choice) and
    `position` the tc_position option (TCX only)."""

    def __init__(self, netns, ifname, mode, hook, pin_dir, xdp_mode='skb', requested='auto', position=None,
                 clsact_marker=None, own_name=None, filter_name='netprobe', have=None, remembered=None):
        self.netns, self.ifname, self.mode, self.hook = netns, ifname, mode, hook
        self.xdp_mode, self.requested = xdp_mode, requested or 'auto'
        self.position = position if isinstance(position, Position) else Position.parse(position)
        self.link_pin = os.path.join(pin_dir, HEAD_LINK)
        self.clsact_marker, self.own_name, self.filter_name = clsact_marker, own_name, filter_name
        self._have = have
        self.remembered = remembered if remembered in PATHS else None  # the path the last run chose
        self.ipr = self.ifindex = None
        self.state = None    # HeadState of the path in use (or of the wanted path when nothing is attached)
        self.in_use = None   # path holding our head now, None when nothing of ours is attached
        self.drift = []

    def bind(self, ipr, ifindex):
        self.ipr, self.ifindex = ipr, ifindex
        return self

    def _target(self):
        return Target(self.netns, self.ipr, self.ifindex, self.ifname, self.hook, self.link_pin,
                      xdp_mode=self.xdp_mode, position=self.position, filter_name=self.filter_name,
                      clsact_marker=self.clsact_marker, own_name=self.own_name)

    def path(self, path):
        return make(path, self._target())

    @property
    def wanted(self):
        """The path the options ask for. `auto` keeps the path the last run chose (a rerun that changes
        nothing probes nothing); a new chain tries the kernel once."""
        if self.requested == 'auto' and self.remembered:
            return self.remembered
        if self._have is None and self.requested == 'auto':
            self._have = kernel_paths()[0]
        return choose(self.mode, self.requested, self._have)

    def observe(self):
        """HeadState of what holds our head now; notes drift (detached link, path other than wanted)."""
        self.drift = []
        legacy, modern = (XDP_NETLINK, XDP_LINK) if self.mode == 'xdp' else (TC_CLS_BPF, TCX)
        link = self.path(modern).query() if os.path.exists(self.link_pin) else None
        if link is not None and link.attached:
            self.in_use, self.state = modern, link
        else:
            old = self.path(legacy).query()
            self.in_use = legacy if old.attached else None
            self.state = old if old.attached or link is None else link
            if link is not None and link.link_detached:
                self.drift.append('the %s head link on %s was detached (by another tool, or the interface was '
                                  'recreated): reattached' % (modern, self.ifname))
        if self.in_use and self.in_use != self.wanted:
            how = ('new attachment first' if self.mode == 'tc'
                   else 'the chain held on TC ingress meanwhile, unless mode_switch is gap')
            self.drift.append('head attached by %s, wanted %s: migrated (%s)' % (self.in_use, self.wanted, how))
        return self.state

    @property
    def prog_id(self):
        return self.state.prog_id if self.state is not None and self.state.attached else 0

    @property
    def migrating(self):
        """Our head is attached by another path than the options ask for."""
        return bool(self.in_use) and self.in_use != self.wanted

    def set(self, fd, migrate=True):
        """Make the hook run fd (None: detach). Atomic on one path; across paths new first, then old.
        migrate=False keeps the path in use (the chain moves an XDP head across paths only while its
        stand-in holds TC ingress)."""
        if self.state is None:
            self.observe()
        current, in_use = self.prog_id, self.in_use
        wanted = (self.wanted if migrate or not in_use else in_use) if fd is not None else None
        if fd is None:
            if in_use:
                self.path(in_use).detach()
            self._drop_stale_link()
        elif in_use == wanted and current:
            if self.mode == 'xdp' and self.state.mode not in (None, self.xdp_mode):
                # skb <-> native: the kernel cannot swap across modes (the chain holds TC ingress meanwhile)
                self.path(in_use).detach()
                self.path(wanted).attach(fd)
            else:
                expected = _bpf.prog_fd_by_id(current)
                try:
                    self.path(in_use).replace(fd, expected)
                finally:
                    os.close(expected)
        elif in_use is None:
            self._drop_stale_link()
            self.path(wanted).attach(fd)
        elif self.mode == 'tc':
            # both run on one clsact hook (TCX first): for an instant a packet may be judged twice, never zero times
            if wanted == TCX:
                self.path(TCX).attach(fd)
                self.path(TC_CLS_BPF).detach()
            else:
                self.path(TC_CLS_BPF).attach(fd)
                self.path(TCX).detach()
        else:
            # XDP: a link cannot be created over a netlink program (EBUSY) nor beside it in the other mode
            self.path(in_use).detach()
            self._drop_stale_link()
            self.path(wanted).attach(fd)
        self.observe()

    def _drop_stale_link(self):
        if os.path.exists(self.link_pin):
            fd = _open_pin(self.link_pin)
            if fd is not None:
                try:
                    info = _bpf.link_info(fd)
                finally:
                    os.close(fd)
                if info['ifindex'] == self.ifindex and info['prog_id']:
                    return  # a live link of ours: not stale
            _state.unpin(self.link_pin)

    def describe(self):
        """Facts: the path in use (None: not attached), the wanted one, link, place, foreign programs."""
        state = self.state or HeadState(self.wanted)
        out = {'attach_path': self.in_use, 'attach_wanted': self.wanted, 'head_link_id': state.link_id or None,
               'foreign_programs': [p.as_dict() for p in state.foreign]}
        if self.mode == 'tc':
            out['tc_position'] = self.position.label()
            out['tcx_index'] = state.position
        return out
