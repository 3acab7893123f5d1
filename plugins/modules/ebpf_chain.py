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
  interface:
    description:
      - Interface whose hook carries the chain. One of O(interface) and O(interfaces) is required.
    type: str
  interfaces:
    description:
      - The same chain on many interfaces, converged in one run under one lock: names, or shell patterns
        such as C(veth*) matched against the interfaces of O(netns) when the task runs (at most 256).
      - A probe is compiled at most once per host for all of them (it is loaded from bytecode on each).
      - Results are in RV(chains), one entry per interface.
    type: list
    elements: str
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
      reset_metrics:
        description:
          - When the probe's code changes, start its maps fresh instead of keeping those whose layout is
            unchanged.
        type: bool
        default: false
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

- name: The same counter on every container veth, one compile for all of them
  netprobe.ebpf.ebpf_chain:
    interfaces: ['veth*']
    hook: egress
    probes:
      - name: out
        probe: counter

- name: Remove the chain
  netprobe.ebpf.ebpf_chain:
    interface: eth0
    state: absent
'''

RETURN = r'''
chain:
  description:
    - The chain after the run (predicted in check mode); see M(netprobe.ebpf.ebpf_probe). Each probe says how
      its program was obtained (C(build) - C(bytecode) prebuilt, C(cached) built earlier on this host, C(bcc)
      compiled now) and the hash of its bytecode (C(image_hash)), so two hosts can be compared.
  returned: success and O(interface) given
  type: dict
chains:
  description: With O(interfaces), one entry per interface matched, each with C(interface), C(changed),
    C(chain), C(drift) and C(notes).
  returned: success and O(interfaces) given
  type: list
  elements: dict
notes:
  description: What the run did that the user should know, such as maps that started fresh after a patch
    because their layout changed.
  returned: success
  type: list
  elements: str
compiled:
  description: Probes compiled during this run (empty on an unchanged rerun, and when bytecode was loaded).
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

from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _module, _state


def desired_chain(params, current):
    """Listed probes in order; without purge, unlisted ones ride behind the listed probe before them."""
    if params['state'] == 'absent':
        return []
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
        interfaces=dict(type='list', elements='str'),
    )
    argument_spec.update(_module.TARGET_ARGS)
    argument_spec['interface'] = dict(type='str')
    argument_spec.update(_module.INTERNAL_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_one_of=[('interface', 'interfaces')],
                           mutually_exclusive=[('interface', 'interfaces')])

    def desired(current):
        return desired_chain(module.params, current)

    def body():
        images = _module.images_from_params(module.params)
        if module.params['interface']:
            chain = _module.chain_from_params(module.params, images=images)
            return _module.finish(module, _module.converge(module, chain, desired), images)
        interfaces = _module.expand_interfaces(module.params, module.params['interfaces'])
        chains, before, after = [], {}, {}
        with _state.HostLock():
            for name in interfaces:
                one = _module.converge_locked(module, _module.chain_from_params(module.params, name, images),
                                              desired)
                diff = one.pop('diff')
                before[name], after[name] = diff['before'], diff['after']
                chains.append(dict(one, interface=name))
        return _module.finish(module, dict(changed=any(c['changed'] for c in chains), chains=chains,
                                           diff=dict(before=before, after=after)), images)

    _module.run(module, body)


if __name__ == '__main__':
    main()
