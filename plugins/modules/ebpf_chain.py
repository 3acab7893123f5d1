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
author:
  - netprobe.ebpf contributors (@netprobe)
extends_documentation_fragment:
  - netprobe.ebpf.attributes
  - netprobe.ebpf.attributes.chain_edit
  - netprobe.ebpf.chain
options:
  probes:
    description:
      - The probes of the chain, head first; at most 64 (the chain's program array has 64 slots).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the probe, unique in the chain.
        type: str
        required: true
      source:
        description: The probe's C code, inline, at most 1 MiB.
        type: str
      src:
        description: Path of a C file on the controller; a regular file of at most 1 MiB.
        type: path
      probe:
        description: Name of a bundled probe, such as C(counter).
        type: str
      cflags:
        description: Extra compiler flags; at most 64, each at most 1024 characters.
        type: list
        elements: str
        default: []
      config:
        description:
          - Configuration of a bundled probe, as documented in C(docs/probes/<name>.md); validated before
            anything changes and applied as map updates without recompiling; at most 256 KiB as JSON.
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
  netns_id:
    description:
      - With O(state=absent), the inode number of the chain's network namespace, as M(netprobe.ebpf.ebpf_facts)
        reports it (C(netns_id)). When that namespace is gone (its interfaces and attachments went with it),
        only the chain's pins and metadata are left, and they are removed.
      - Namespace inodes are reused, so the leftovers are removed only if their metadata names O(netns)
        (omit O(netns) for a chain of the host's namespace). When O(netns) is still a live namespace with
        this inode, the chain is removed as usual.
    type: int
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

- name: Remove the chain
  netprobe.ebpf.ebpf_chain:
    interface: eth0
    state: absent

- name: Remove what is left of a chain whose network namespace was deleted
  netprobe.ebpf.ebpf_chain:
    interface: veth1
    netns: lab
    netns_id: 4026532561
    hook: egress
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
removed:
  description: Pin directory and metadata file removed for a chain whose network namespace is gone.
  returned: when O(netns_id) is given and its namespace is gone
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _limits, _module, _orphans
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


def desired_chain(params, current):
    """Listed probes in order; without purge, unlisted ones ride behind the listed probe before them."""
    if params['state'] == 'absent':
        return []
    _limits.check_probes('probes', params['probes'])
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
        netns_id=dict(type='int'),
    )
    argument_spec.update(_module.TARGET_ARGS)
    argument_spec.update(_module.INTERNAL_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    def body():
        params = module.params
        if params['netns_id'] is not None:
            if params['state'] != 'absent':
                raise NetprobeError('netns_id addresses a chain to remove: use it with state: absent')
            if not _orphans.netns_alive(params['netns'], params['netns_id']):
                mode = params['mode'] or ('xdp' if params['hook'] == 'ingress' else 'tc')
                return _orphans.remove(params['netns_id'], params['netns'], params['interface'], mode,
                                       params['hook'], module.check_mode)
        chain = _module.chain_from_params(module.params)
        return _module.converge(module, chain, lambda current: desired_chain(module.params, current))

    _module.run(module, body)


if __name__ == '__main__':
    main()
