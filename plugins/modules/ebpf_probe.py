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
  - Builds a probe (a bundled one from its shipped bytecode, one of your own with bcc, once per host) and
    places it in the ordered chain of probes on an interface's
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
  - netprobe.ebpf.attributes
  - netprobe.ebpf.attributes.chain_edit
  - netprobe.ebpf.chain
  - netprobe.ebpf.chain.PROBE_CODE
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
  - Python >= 3.9 and pyroute2 >= 0.9 on the target (the C(netprobe.ebpf.prereqs) role provides them)
  - root on the target (C(become=true)) for bpf(2), netlink and bpffs
  - Only for probes of your own compiled on the target (O(source), O(src)) - the bcc Python bindings
    (python3-bpfcc) and kernel headers (any installed linux-headers package as a fallback). Bundled probes,
    and images built elsewhere, load from bytecode and need neither.
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
    attach:
      description:
        - The head attachment - C(attach_path) in use (C(xdp-netlink), C(xdp-link), C(tc-cls_bpf), C(tcx), or
          null when nothing of ours is attached), C(attach_wanted) (what the options ask for), C(head_link_id)
          (link paths), C(foreign_programs) (other programs on the same hook, never touched, each with
          prog_id, name, kind C(xdp), C(xdp_dispatcher), C(tcx) or C(cls_bpf), link_id, position or
          priority and handle) and, on TC, C(tc_position) and C(tcx_index) (our place in the TCX run order).
      type: dict
      returned: when the interface exists
      sample: {attach_path: tcx, attach_wanted: tcx, head_link_id: 12, tc_position: first, tcx_index: 0,
               foreign_programs: [{prog_id: 88, name: cil_from_netdev, kind: tcx, link_id: 9, position: 1}]}
    probes:
      description: Probes in order, each with name, position, slot, prog_id, tag, source_hash, spec_hash, origin.
      type: list
      elements: dict
      returned: always
record:
  description:
    - What happened to the chain's record on the host (see O(persist)) - C(path), C(persist), and C(state) -
      C(written), C(unchanged), C(removed), C(none) (nothing recorded) or C(failed) (with C(error); a warning, the
      chain itself was converged).
  returned: success, not in check mode
  type: dict
  sample: {path: /var/lib/netprobe/records/host/eth0/xdp-ingress.json, persist: true, state: written}
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

from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _confirm, _module
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
        guard = _confirm.Guard(module)  # a change waiting for confirmation is confirmed by this one
        result = _module.finish(module, _module.converge(module, chain, lambda current: desired_chain(params, current),
                                                         guard), chain.images)
        if guard.confirm is not None:
            result['confirm'] = guard.confirm
        probe = [p for p in result['chain']['probes'] if p['name'] == params['name']]
        result['probe'] = probe[0] if probe else {}
        return result

    _module.run(module, body)


if __name__ == '__main__':
    main()
