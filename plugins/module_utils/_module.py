# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the modules share: argument specs, probe specs from arguments, the privilege check, error handling."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fnmatch
import os
import pwd
import re

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.netprobe.ebpf.plugins.module_utils import (
    _chain, _compile, _history, _limits, _netlink, _persist, _state)
from ansible_collections.netprobe.ebpf.plugins.module_utils._compile import HEADER_FILES, MissingLibrary
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

TARGET_ARGS = dict(
    interface=dict(type='str', required=True),
    netns=dict(type='str'),
    hook=dict(type='str', default='ingress', choices=['ingress', 'egress']),
    mode=dict(type='str', choices=['xdp', 'tc']),
    xdp_mode=dict(type='str', default='skb', choices=['skb', 'native']),
    mode_switch=dict(type='str', default='hold', choices=['hold', 'gap']),
    xdp_attach=dict(type='str', default='auto', choices=['auto', 'link', 'netlink']),
    tc_attach=dict(type='str', default='auto', choices=['auto', 'tcx', 'cls_bpf']),
    tc_position=dict(type='raw', default='last'),
    persist=dict(type='bool', default=True),
)

CODE_ARGS = dict(
    source=dict(type='str'),
    src=dict(type='path'),
    probe=dict(type='str'),
    cflags=dict(type='list', elements='str', default=[]),
    config=dict(type='dict'),
    reset_metrics=dict(type='bool', default=False),
)

# Set by the action plugin: the C files of bpf/ read on the controller, and the prebuilt bytecode of the
# bundled probes the task uses (spec hash -> image).
INTERNAL_ARGS = dict(_netprobe_files=dict(type='dict', no_log=False), _netprobe_images=dict(type='dict', no_log=False))


MAX_INTERFACES = 256


def images_from_params(params):
    missing = _netlink.pyroute2_missing()
    if missing is not None:
        raise MissingLibrary('pyroute2', missing)
    files = params.get('_netprobe_files') or {}
    missing = [f for f in HEADER_FILES if f not in files]
    if missing:
        raise NetprobeError('the C sources of bpf/ did not arrive (%s): run this module through Ansible so its '
                            'action plugin can send them' % ', '.join(missing))
    return _compile.Images(files, shipped=params.get('_netprobe_images'))


def chain_from_params(params, interface=None, images=None):
    """The Chain the target options describe; interface and images override (one task, many interfaces:
    the images are shared, so a probe compiles once however many interfaces carry it)."""
    images = images or images_from_params(params)
    mode = params['mode'] or ('xdp' if params['hook'] == 'ingress' else 'tc')
    return _chain.Chain(interface or params['interface'], params['hook'], mode, netns=params['netns'],
                        xdp_mode=params['xdp_mode'], files=images.files, images=images,
                        mode_switch=params.get('mode_switch') or 'hold',
                        attach=params.get('xdp_attach' if mode == 'xdp' else 'tc_attach') or 'auto',
                        tc_position=params.get('tc_position') if mode == 'tc' else None)


def expand_interfaces(params, patterns):
    """Interface names in the target namespace matching the names or shell patterns given (veth*)."""
    netns = _netlink.Netns(params['netns'])
    with netns.iproute() as ipr:
        present = sorted(link.name for link in ipr.get_links())
    found = []
    for pattern in patterns:
        matched = [n for n in present if fnmatch.fnmatchcase(n, pattern)] if _is_pattern(pattern) else [pattern]
        found.extend(n for n in matched if n not in found)
    if len(found) > MAX_INTERFACES:
        raise NetprobeError('interfaces matches %d interfaces, more than the %d one task converges: narrow the '
                            'patterns or split the task' % (len(found), MAX_INTERFACES))
    return found


def _is_pattern(name):
    return any(c in name for c in '*?[')


def spec_from_params(name, params):
    if params.get('probe'):
        origin = 'bundled:%s' % params['probe']
    elif params.get('src'):
        origin = 'file:%s' % params['src']
    else:
        origin = 'inline'
    if not params.get('source'):
        raise NetprobeError('probe %s needs its code: one of source, src or probe' % name)
    _limits.check_code('probe %s' % name, params)
    return _chain.ProbeSpec(name, params['source'], origin, params.get('cflags'), params.get('config'),
                            reset_metrics=bool(params.get('reset_metrics')))


def converge(module, chain, desired_from, guard=None):
    """Observe, plan the chain desired_from(current probe names) returns, apply outside check mode."""
    with _state.HostLock():
        return converge_locked(module, chain, desired_from, guard)


def converge_locked(module, chain, desired_from, guard=None):
    """guard (_confirm.Guard): asked before a change (to arm a revert) and for the record after it."""
    def keep_record(changed):
        return guard.record(chain, changed) if guard is not None else record(module, chain)
    with chain:
        chain.observe()
        problem = _state.state_problem(chain.paths.state_file)
        if problem:
            chain.drift.append('metadata %s was unreadable (%s): the chain is rebuilt from its pins'
                               % (chain.paths.state_file, problem))
        desired = desired_from([r.name for r in chain.live])
        if desired and chain.ifindex is None:
            _netlink.link_index(chain.ipr, chain.interface, chain.netns)
        before = chain.diff_view(chain.live)
        if not desired and not chain.live and not chain.drift:
            result = dict(changed=False, chain=chain.describe(), drift=[], notes=[],
                          previous=_history.summary_of(_history.rollback_point(chain)),
                          diff=dict(before=before, after=before))
            if not module.check_mode:  # a chain gone (a reboot) whose record would bring it back at the next boot
                result['record'] = keep_record(False)
                result['changed'] = result['record']['state'] == 'removed'
            return result
        plan = chain.plan(desired)
        changed = plan.changes
        predicted = chain.predicted(plan, desired)
        previous = None
        if changed and not module.check_mode:
            previous = _history.record(chain, desired)  # what a rollback returns to
            if guard is not None:
                guard.before_change(chain)
            if desired:
                chain.apply(desired, plan)
            else:
                chain.destroy()
        else:
            previous = _history.rollback_point(chain)
        described = chain.describe(predicted if module.check_mode else None)
        result = dict(changed=changed, chain=described, drift=chain.drift, notes=chain.notes,
                      previous=_history.summary_of(previous),
                      diff=dict(before=before, after=chain.diff_view(predicted)))
        if not module.check_mode:
            result['record'] = keep_record(changed)
        return result


def record(module, chain):
    """The chain's last-known-good follows it (_persist.py); a record that cannot be written is a warning: the
    chain itself was converged."""
    try:
        return _persist.sync(chain, module.params.get('persist', True))
    except (NetprobeError, OSError) as e:
        msg = e.msg if isinstance(e, NetprobeError) else 'the chain record could not be written: %s' % os_error_message(e)
        module.warn(msg)
        return {'path': _persist.path_of(chain), 'state': 'failed', 'error': msg}


def finish(module, result, images):
    """Add what the images did (compiles, warnings) to a result."""
    for w in images.warnings:
        module.warn(w)
    result['compiled'] = list(images.compiled)
    return result


# Capability bits (linux/capability.h). CAP_BPF (5.8+) splits bpf() off CAP_SYS_ADMIN, which still grants it.
CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF = 12, 21, 39


def missing_privileges(status_text):
    """What a process with this /proc/self/status lacks to run netprobe's modules: [] when it has enough.
    netlink attachments need CAP_NET_ADMIN; bpf() needs CAP_BPF or CAP_SYS_ADMIN (older kernels, or root)."""
    match = re.search(r'^CapEff:\s*([0-9a-fA-F]+)\s*$', status_text, re.M)
    if not match:
        return []  # no capability line (not Linux /proc): let the kernel answer
    eff = int(match.group(1), 16)
    missing = [] if eff & (1 << CAP_NET_ADMIN) else ['CAP_NET_ADMIN']
    if not eff & ((1 << CAP_BPF) | (1 << CAP_SYS_ADMIN)):
        missing.append('CAP_BPF')
    return missing


def privilege_message(module_name, missing, uid, user):
    return ('netprobe.ebpf.%s needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for bpffs): it runs as %s (uid %d) '
            'without %s. Run the task with `become: true` (or ansible_become: true in the inventory), check mode '
            'included: it reads the pins and the kernel state, which only root may' % (
                module_name.split('.')[-1], user, uid, ' and '.join(missing)))


def check_privileges(module):
    """fail_json early, before anything is touched, when the module cannot work (an unprivileged login
    without become); the same in check mode, whose answer needs the same reads."""
    try:
        with open('/proc/self/status') as f:
            missing = missing_privileges(f.read())
    except (IOError, OSError):
        return
    if missing:
        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            user = 'user %d' % os.geteuid()
        module.fail_json(msg=privilege_message(module._name, missing, os.geteuid(), user), missing_capabilities=missing)


def run(module, body):
    """Check the privileges, run body(); turn our errors into fail_json with a message that says what to fix."""
    check_privileges(module)
    try:
        module.exit_json(**body())
    except MissingLibrary as e:
        module.fail_json(msg=missing_required_lib(e.library), exception=e.traceback)
    except NetprobeError as e:
        module.fail_json(msg=e.msg, **e.details)
    except OSError as e:
        module.fail_json(msg=os_error_message(e))
    except _netlink.NetlinkError as e:
        module.fail_json(msg=netlink_error_message(e))


def netlink_error_message(e):
    code = getattr(e, 'code', None)
    if not isinstance(code, int):
        code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
    text = '%s (%s)' % (os.strerror(code), errno.errorcode.get(code, code)) if code else str(e)
    if code in (errno.EPERM, errno.EACCES):
        return 'netlink request refused: %s. Run as root (become: true), with CAP_NET_ADMIN' % text
    return 'netlink request failed: %s; the chain is left as the kernel has it, the next run repairs it' % text


def os_error_message(e):
    """An OSError as a message whose advice matches the error."""
    where = ' (%s)' % e.filename if getattr(e, 'filename', None) else ''
    text = '%s%s' % (e.strerror or e, where)
    if e.errno in (errno.EPERM, errno.EACCES):
        return ('permission denied by the kernel: %s. Run as root (become: true), with CAP_BPF, CAP_NET_ADMIN and '
                'CAP_SYS_ADMIN, and bpf() allowed (kernel.unprivileged_bpf_disabled does not matter for root, '
                'a seccomp or LSM policy can)' % text)
    if e.errno == errno.ENOENT:
        return ('not found: %s. Something the chain needs is missing (a pin under %s, an interface or a namespace '
                'removed meanwhile): rerun to rebuild it' % (text, _state.PIN_ROOT))
    if e.errno == errno.ENOSPC or e.errno == errno.ENOMEM:
        return 'out of kernel memory or map space: %s. Free some BPF objects or raise the memlock limit' % text
    return 'kernel or file system error: [%s] %s' % (errno.errorcode.get(e.errno, e.errno), text)
