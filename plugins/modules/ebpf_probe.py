#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ebpf_probe
short_description: Put one eBPF probe in a chain on an interface hook, or take it out
version_added: 0.1.0
description:
  - Compiles a probe with bcc and places it in the ordered chain of probes on an interface's
    ingress or egress hook (XDP or TC). Each probe passes the packet on to the next one or ends it
    with its verdict.
  - A new probe is inserted at O(position), or before/after another probe, or at the tail.
    A probe whose code changed is patched in place and keeps its position. Every edit is a single
    atomic map write or attachment swap, so traffic never meets a half-built chain.
  - A run with the same input changes nothing and compiles nothing. Drift (a program detached by
    hand, an interface recreated, pins removed) is reported and repaired.
  - A compiler error or a verifier rejection fails the task and leaves the chain as it was.
author:
  - netprobe.ebpf contributors (@netprobe)
extends_documentation_fragment:
  - netprobe.ebpf.chain
  - netprobe.ebpf.chain.PROBE_CODE
attributes:
  check_mode:
    support: full
    description: Reports what would change without compiling or touching the kernel.
  diff_mode:
    support: full
    description: Shows the chain (probe names and source hashes) before and after.
  platform:
    support: full
    platforms: posix
    description: Linux targets with eBPF, as root.
options:
  interface:
    description:
      - Interface whose hook carries the chain.
    type: str
    required: true
  name:
    description:
      - Name of the probe, unique in its chain. Letters, digits, C(_) and C(-).
    type: str
    required: true
  state:
    description:
      - C(present) adds or updates the probe, C(absent) removes it and relinks its neighbours.
    type: str
    default: present
    choices: [present, absent]
  position:
    description:
      - Index in the chain, 0 is the head. Larger than the chain means the tail.
      - Without O(position), O(before) or O(after), an existing probe keeps its place and a new one goes to the tail.
    type: int
  before:
    description:
      - Place the probe right before this probe.
    type: str
  after:
    description:
      - Place the probe right after this probe.
    type: str
requirements:
  - bcc Python bindings (python3-bpfcc)
  - pyroute2 >= 0.9
  - Linux kernel headers, or any installed linux-headers package as a fallback
'''

EXAMPLES = r'''
- name: Count packets per protocol on ingress, in XDP
  netprobe.ebpf.ebpf_probe:
    name: count
    interface: eth0
    probe: counter

- name: Drop ICMP first, in front of the counter
  netprobe.ebpf.ebpf_probe:
    name: no-icmp
    interface: eth0
    position: 0
    source: |
      #include "netprobe.h"
      NP_PROBE(ctx)
      {
          struct np_packet pkt;
          np_parse(ctx, &pkt);
          return pkt.l4_proto == IPPROTO_ICMP ? NP_DROP : NP_PASS;
      }

- name: A probe from a file of the playbook, on TC egress inside a namespace
  netprobe.ebpf.ebpf_probe:
    name: shaper
    interface: veth1
    netns: lab
    hook: egress
    mode: tc
    src: probes/shaper.c
    cflags: ["-DLIMIT=1000"]

- name: Take it out again
  netprobe.ebpf.ebpf_probe:
    name: no-icmp
    interface: eth0
    state: absent
'''

RETURN = r'''
probe:
  description: The probe as it now stands (empty after O(state=absent)).
  returned: success
  type: dict
  sample: {name: count, position: 0, slot: 0, prog_id: 126, tag: dc9eeb3619643ac2,
           source_hash: 5cf8ad11..., origin: "bundled:counter"}
chain:
  description: The whole chain after the run (predicted in check mode).
  returned: success
  type: dict
  contains:
    interface:
      description: Interface name.
      type: str
      returned: always
    netns:
      description: Network namespace as given, or C(host).
      type: str
      returned: always
    hook:
      description: C(ingress) or C(egress).
      type: str
      returned: always
    mode:
      description: C(xdp) or C(tc).
      type: str
      returned: always
    attached:
      description: Whether the head program is attached to the hook.
      type: bool
      returned: always
    head_prog_id:
      description: Id of the program attached to the hook.
      type: int
      returned: always
    pin_dir:
      description: Where the chain is pinned in bpffs.
      type: str
      returned: always
    probes:
      description: Probes in order, each with name, position, slot, prog_id, tag, source_hash, spec_hash, origin.
      type: list
      elements: dict
      returned: always
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
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _module
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


def desired_chain(params, current):
    """The chain's names in order with this probe added, moved or removed; the others kept as they are."""
    name = params['name']
    desired = [_chain.Keep(n) for n in current if n != name]
    if params['state'] == 'absent':
        return desired
    spec = _module.spec_from_params(name, params)
    others = [d.name for d in desired]
    for anchor in (params['before'], params['after']):
        if anchor is not None and anchor not in others:
            raise NetprobeError('probe %r is not in the chain (it has: %s)' % (anchor, ', '.join(others) or 'none'))
    if params['before'] is not None:
        index = others.index(params['before'])
    elif params['after'] is not None:
        index = others.index(params['after']) + 1
    elif params['position'] is not None:
        if params['position'] < 0:
            raise NetprobeError('position must be 0 (the head) or more')
        index = min(params['position'], len(others))
    elif name in current:
        index = current.index(name)
    else:
        index = len(others)
    desired.insert(index, spec)
    return desired


def main():
    argument_spec = dict(
        name=dict(type='str', required=True),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        position=dict(type='int'),
        before=dict(type='str'),
        after=dict(type='str'),
    )
    argument_spec.update(_module.TARGET_ARGS)
    argument_spec.update(_module.CODE_ARGS)
    argument_spec.update(_module.INTERNAL_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[('position', 'before', 'after')])

    def body():
        params = module.params
        chain = _module.chain_from_params(params)
        result = _module.finish(module, _module.converge(module, chain, lambda current: desired_chain(params, current)),
                                chain.images)
        probe = [p for p in result['chain']['probes'] if p['name'] == params['name']]
        result['probe'] = probe[0] if probe else {}
        return result

    _module.run(module, body)


if __name__ == '__main__':
    main()
