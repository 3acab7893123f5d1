# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What ebpf_probe and ebpf_chain share: argument specs, probe specs from arguments, error handling."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _compile, _netlink, _state
from ansible_collections.netprobe.ebpf.plugins.module_utils._compile import HEADER_FILES, MissingLibrary
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

TARGET_ARGS = dict(
    interface=dict(type='str', required=True),
    netns=dict(type='str'),
    hook=dict(type='str', default='ingress', choices=['ingress', 'egress']),
    mode=dict(type='str', choices=['xdp', 'tc']),
    xdp_mode=dict(type='str', default='skb', choices=['skb', 'native']),
    mode_switch=dict(type='str', default='hold', choices=['hold', 'gap']),
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
    if _netlink.PYROUTE2_IMPORT_ERROR is not None:
        raise MissingLibrary('pyroute2', _netlink.PYROUTE2_IMPORT_ERROR)
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
                        mode_switch=params.get('mode_switch') or 'hold')


def expand_interfaces(params, patterns):
    """Interface names in the target namespace matching the names or shell patterns given (veth*)."""
    netns = _netlink.Netns(params['netns'])
    with netns.iproute() as ipr:
        present = sorted(link.get_attr('IFLA_IFNAME') for link in ipr.get_links())
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
    return _chain.ProbeSpec(name, params['source'], origin, params.get('cflags'), params.get('config'),
                            reset_metrics=bool(params.get('reset_metrics')))


def converge(module, chain, desired_from):
    """Observe, plan the chain desired_from(current probe names) returns, apply outside check mode."""
    with _state.HostLock():
        return converge_locked(module, chain, desired_from)


def converge_locked(module, chain, desired_from):
    with chain:
        chain.observe()
        desired = desired_from([r.name for r in chain.live])
        if desired and chain.ifindex is None:
            _netlink.link_index(chain.ipr, chain.interface, chain.netns)
        before = chain.diff_view(chain.live)
        if not desired and not chain.live and not chain.drift:
            return dict(changed=False, chain=chain.describe(), drift=[], notes=[],
                        diff=dict(before=before, after=before))
        plan = chain.plan(desired)
        changed = plan.changes
        predicted = chain.predicted(plan, desired)
        if changed and not module.check_mode:
            if desired:
                chain.apply(desired, plan)
            else:
                chain.destroy()
        described = chain.describe(predicted if module.check_mode else None)
        return dict(changed=changed, chain=described, drift=chain.drift, notes=chain.notes,
                    diff=dict(before=before, after=chain.diff_view(predicted)))


def finish(module, result, images):
    """Add what the images did (compiles, warnings) to a result."""
    for w in images.warnings:
        module.warn(w)
    result['compiled'] = list(images.compiled)
    return result


def run(module, body):
    """Run body(); turn our errors into fail_json with a message that says what to fix."""
    try:
        module.exit_json(**body())
    except MissingLibrary as e:
        module.fail_json(msg=missing_required_lib(e.library), exception=e.traceback)
    except NetprobeError as e:
        module.fail_json(msg=e.msg, **e.details)
    except OSError as e:
        module.fail_json(msg='kernel or file system error: %s (are you root, with bpf() allowed?)' % e)
