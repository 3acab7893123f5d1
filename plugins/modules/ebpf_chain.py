#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ebpf_chain
short_description: Declare the whole ordered chain of eBPF probes on an interface hook
version_added: 0.1.0
description:
  - Converges the chain on one interface hook to the listed probes, in order, with the fewest
    atomic edits. Unchanged probes keep their program ids; probes whose code changed are patched in
    place; probes out of order are moved; new ones are inserted where the list puts them.
  - Everything to compile is compiled before the first edit, so a compiler error or a verifier
    rejection fails the task with the chain untouched.
  - A run with the same input changes nothing and compiles nothing.
  - Before each change of its probes, the chain's current spec (every probe's code, flags and config) is
    recorded on the host, per chain, under C(/run/netprobe/history); O(rollback=true) returns the chain to
    the newest recorded spec. See C(docs/rollout.md) for a canary rollout that uses it.
author:
  - netprobe.ebpf contributors (@netprobe)
extends_documentation_fragment:
  - netprobe.ebpf.chain
attributes:
  check_mode:
    support: full
    description: Reports the planned chain without compiling or touching the kernel.
  diff_mode:
    support: full
    description: Shows the chain (probe names and source hashes) before and after.
  platform:
    support: full
    platforms: posix
    description: Linux targets with eBPF, as root.
options:
  probes:
    description:
      - The probes of the chain, head first.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the probe, unique in the chain.
        type: str
        required: true
      source:
        description: The probe's C code, inline.
        type: str
      src:
        description: Path of a C file on the controller.
        type: path
      probe:
        description: Name of a bundled probe, such as C(counter).
        type: str
      cflags:
        description: Extra compiler flags.
        type: list
        elements: str
        default: []
      config:
        description:
          - Configuration of a bundled probe, as documented in C(docs/probes/<name>.md); validated before
            anything changes and applied as map updates without recompiling.
        type: dict
  purge:
    description:
      - Remove probes of the chain that are not listed.
      - Without it, an unlisted probe stays, right after the listed probe it follows now.
    type: bool
    default: false
  state:
    description:
      - C(absent) removes every probe of the chain, the attachment and the pins.
    type: str
    default: present
    choices: [present, absent]
  rollback:
    description:
      - Return the chain to the spec it ran before its last change, as recorded by the engine on the host
        (the probes, their order, code, cflags and config; unchanged probes keep their program ids).
        The desired chain is then exactly the recorded one, as with O(purge=true).
      - The same atomic edits as any other change; in check mode the planned chain is reported and nothing
        changes. A second rollback changes nothing (the chain already runs the recorded spec).
      - Fails, changing nothing, when no previous spec is recorded (a chain that never changed since it was
        created, or since a reboot).
      - Mutually exclusive with O(probes); needs O(state=present).
    type: bool
    default: false
requirements:
  - bcc Python bindings (python3-bpfcc)
  - pyroute2 >= 0.9
'''

EXAMPLES = r'''
- name: Ingress chain in XDP, counting before and after a filter
  netprobe.ebpf.ebpf_chain:
    interface: eth0
    probes:
      - name: seen
        probe: counter
      - name: no-icmp
        src: probes/no_icmp.c
      - name: passed
        probe: counter
    purge: true

- name: Egress chain on TC inside a namespace
  netprobe.ebpf.ebpf_chain:
    interface: veth1
    netns: lab
    hook: egress
    probes:
      - name: out
        probe: counter

- name: Return the chain to what it was before its last change
  netprobe.ebpf.ebpf_chain:
    interface: eth0
    rollback: true

- name: Remove the chain
  netprobe.ebpf.ebpf_chain:
    interface: eth0
    state: absent
'''

RETURN = r'''
chain:
  description: The chain after the run (predicted in check mode); see M(netprobe.ebpf.ebpf_probe).
  returned: success
  type: dict
compiled:
  description: Probes compiled during this run (empty on an unchanged rerun).
  returned: success
  type: list
  elements: str
drift:
  description: Differences found between the kernel and the last run, repaired by this run.
  returned: success
  type: list
  elements: str
previous:
  description:
    - The spec a O(rollback=true) would return to (recorded before this run's change, or earlier);
      null when none is recorded. Sources are given by their hash.
  returned: success
  type: dict
  contains:
    recorded_at:
      description: When it was recorded (UTC).
      type: str
    xdp_mode:
      description: The XDP mode of the chain then (null for TC).
      type: str
    probes:
      description: The probes, head first, each with name, origin, cflags, config and source_hash.
      type: list
      elements: dict
  sample:
    recorded_at: "2026-12-01T10:00:00Z"
    xdp_mode: skb
    probes:
      - {name: seen, origin: "bundled:counter", cflags: [], config: null, source_hash: 5cf8ad11...}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _history, _module
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


def desired_chain(params, current, chain=None):
    """Listed probes in order; without purge, unlisted ones ride behind the listed probe before them."""
    if params['state'] == 'absent':
        return []
    if params.get('rollback'):
        return [_module.spec_from_params(p.name, p.as_params()) for p in _history.previous(chain).probes]
    listed = [_module.spec_from_params(p['name'], p) for p in params['probes']]
    if params['purge']:
        return listed
    names = set(s.name for s in listed)
    riders, anchor = {}, None
    for name in current:
        if name in names:
            anchor = name
        else:
            riders.setdefault(anchor, []).append(_chain.Keep(name))
    desired = list(riders.get(None, []))
    for spec in listed:
        desired.append(spec)
        desired.extend(riders.get(spec.name, []))
    return desired


def main():
    argument_spec = dict(
        probes=dict(type='list', elements='dict', default=[], options=dict(
            name=dict(type='str', required=True),
            **_module.CODE_ARGS
        )),
        purge=dict(type='bool', default=False),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        rollback=dict(type='bool', default=False),
    )
    argument_spec.update(_module.TARGET_ARGS)
    argument_spec.update(_module.INTERNAL_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    def body():
        if module.params['rollback'] and (module.params['probes'] or module.params['state'] == 'absent'):
            raise NetprobeError('rollback: true returns the chain to its recorded previous spec: give neither probes '
                                'nor state: absent with it')
        chain = _module.chain_from_params(module.params)
        return _module.converge(module, chain, lambda current: desired_chain(module.params, current, chain))

    _module.run(module, body)


if __name__ == '__main__':
    main()
