#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ebpf_restore
short_description: Restore recorded eBPF chains at boot and when an interface appears, with no agent
version_added: 0.1.0
description:
  - Every change of a chain made by M(netprobe.ebpf.ebpf_chain) or M(netprobe.ebpf.ebpf_probe) keeps the chain's
    last-known-good on the host, under C(/var/lib/netprobe/records) (its probes' specs, configs and bytecode,
    its attach options; see C(docs/persistence.md)). This module installs what rebuilds those chains with no
    controller, no compiler and no daemon, or runs that rebuild now.
  - O(state=installed) copies the engine this module runs with (its own AnsiballZ payload) to
    C(/usr/lib/netprobe/engine.zip), writes the launcher C(/usr/lib/netprobe/netprobe-restore), the oneshot
    systemd unit C(netprobe-restore.service) (ordered before C(network-pre.target), so the chains are attached
    before the interfaces carry traffic) and the udev rule C(/etc/udev/rules.d/90-netprobe-restore.rules) (an
    interface of the host's namespace with a record gets its chain back when it is added again), and the path
    unit C(netprobe-restore-netns.path) with its service (a named network namespace added under C(/run/netns)
    gets its recorded chains back as soon as their interfaces appear in it, awaited up to 10 seconds). Each file is
    written only when its content differs. The units are enabled where systemd runs (the path unit also started).
  - O(state=restored) rebuilds the recorded chains now, by the code path the launcher runs, and returns the
    summary. A live chain that matches its record is left as it is; a live chain that differs from its record
    (a newer run put it there) is never replaced; a record that is corrupt, truncated, too large or of another
    version is refused whole.
  - O(state=absent) removes the engine, the launcher, the units and the rule. The records stay (they belong to the
    chains; M(netprobe.ebpf.ebpf_chain) with O(netprobe.ebpf.ebpf_chain#module:state=absent) or
    O(netprobe.ebpf.ebpf_chain#module:persist=false) removes one).
author:
  - netprobe.ebpf contributors (@netprobe)
extends_documentation_fragment:
  - netprobe.ebpf.attributes
attributes:
  check_mode:
    support: full
    description: Reports the files that would change; with O(state=restored), the chains that would be rebuilt.
  diff_mode:
    support: full
    description: Shows the SHA-256 of each installed file before and after.
options:
  state:
    description: What to do (see the description).
    type: str
    default: installed
    choices: [installed, restored, absent]
  root:
    description:
      - Install under this directory as if it were C(/) (for images and tests). The files then name their final
        paths (the unit runs C(/usr/lib/netprobe/netprobe-restore)); the launcher finds its engine beside itself.
        Nothing is enabled unless O(root) is C(/).
    type: path
    default: /
  interface:
    description: With O(state=restored), only the chains of this interface name.
    type: str
  netns:
    description: With O(state=restored), only the chains of this network namespace name (V(host) is the initial one).
    type: str
  inspect:
    description:
      - Also read what a prerequisites check needs, in this same module run, and return it as RV(inspected) (it
        changes nothing). The M(netprobe.ebpf.prereqs) role decides from one such run, in check mode with
        O(state=installed), that a host needs nothing.
    type: dict
    suboptions:
      capabilities:
        description: Return the capabilities M(netprobe.ebpf.ebpf_facts) reports with C(gather_subset=capabilities).
        type: bool
        default: false
      packages:
        description: Debian packages whose installation state dpkg's database gives (installed means C(ii)).
        type: list
        elements: str
        default: []
      paths:
        description: Paths whose existence and modification time are returned.
        type: list
        elements: path
        default: []
      files:
        description: Small text files (up to 1 MiB) whose content is returned (null when missing).
        type: list
        elements: path
        default: []
requirements:
  - Python >= 3.9 and pyroute2 >= 0.9 on the target; the launcher runs with the interpreter this module runs with.
  - root on the target (C(become=true)).
notes:
  - A namespace that a record names (other than the host's) must exist when the launcher runs; at boot, named
    namespaces are usually created later, so run C(netprobe-restore --netns NAME) from what creates them, or the
    playbook. A namespace given to ebpf_chain as a path (not a name under C(/run/netns)) is recorded but never
    restored by name (it is reported as skipped).
  - Restored chains start with fresh metrics (maps do not survive a reboot); M(netprobe.ebpf.ebpf_facts) says so.
'''

EXAMPLES = r'''
- name: Restore chains at boot and when their interface comes back
  netprobe.ebpf.ebpf_restore:
    state: installed

- name: Rebuild the recorded chains now (after the host's bpffs was lost, say)
  netprobe.ebpf.ebpf_restore:
    state: restored
  register: restore

- name: Only the chains of one interface
  netprobe.ebpf.ebpf_restore:
    state: restored
    interface: eth0
    netns: host
'''

RETURN = r'''
files:
  description: The files installed or removed, each with C(path), C(changed) and C(sha256).
  returned: O(state=installed) or O(state=absent)
  type: list
  elements: dict
systemd:
  description: Whether systemd runs on the host (the unit is enabled then).
  returned: O(state=installed) or O(state=absent)
  type: bool
enabled:
  description: Whether the unit is enabled (null where systemd does not run).
  returned: O(state=installed) or O(state=absent)
  type: bool
inspected:
  description:
    - With O(inspect), what was read - C(changed) (the module's own C(changed), also when a task's C(changed_when)
      hides it), C(python) (the interpreter the module ran with), C(packages) (name to
      installed), C(paths) (path to C(exists) and C(mtime)), C(files) (path to text or null) and, with
      O(inspect.capabilities), C(capabilities).
  returned: O(inspect) is given
  type: dict
summary:
  description:
    - What the restore did, per chain, in four lists - C(restored) (rebuilt), C(unchanged) (already runs its
      record), C(skipped) (a newer chain is there, or a namespace given by path), C(failed) (a refused record, a
      missing interface or namespace, a verifier rejection) - each entry with C(record), C(interface), C(netns),
      C(hook), C(mode), C(reason); plus C(duration_s) and C(records).
  returned: O(state=restored)
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netprobe.ebpf.plugins.module_utils import _boot, _inspect, _module, _restore
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


def main():
    module = AnsibleModule(argument_spec=dict(
        state=dict(type='str', default='installed', choices=['installed', 'restored', 'absent']),
        root=dict(type='path', default='/'),
        interface=dict(type='str'),
        netns=dict(type='str'),
        inspect=dict(type='dict', options=_inspect.INSPECT_OPTIONS),
    ), supports_check_mode=True)

    def body():
        result = act()
        if module.params['inspect'] is not None:
            result['inspected'] = _inspect.inspect(module.params['inspect'])
            result['inspected']['changed'] = result['changed']
        return result

    def act():
        params = module.params
        if params['state'] != 'restored' and (params['interface'] or params['netns']):
            raise NetprobeError('interface and netns select the chains of state: restored; give neither with state: %s'
                                % params['state'])
        if params['state'] == 'installed':
            return _boot.install(params['root'], _boot.__file__, module.check_mode)
        if params['state'] == 'absent':
            return _boot.remove(params['root'], module.check_mode)
        summary = _restore.restore(params['interface'], params['netns'], 'ebpf_restore', check_mode=module.check_mode)
        if summary['failed']:
            raise NetprobeError('%d of %d recorded chains could not be restored: %s' % (
                len(summary['failed']), summary['records'], '; '.join(
                    '%s: %s' % (e['record'], e['reason'].splitlines()[0]) for e in summary['failed'])), summary=summary)
        return dict(changed=bool(summary['restored']), summary=summary)

    _module.run(module, body)


if __name__ == '__main__':
    main()
