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
    recorded on the host, per chain, under C(/run/netprobe/history); a new chain records that there was
    none. O(rollback=true) returns the chain to the newest recorded spec, and removes a chain whose only
    record is that there was none. See C(docs/rollout.md) for a canary rollout that uses it.
author:
  - netprobe.ebpf contributors (@netprobe)
extends_documentation_fragment:
  - netprobe.ebpf.attributes
  - netprobe.ebpf.attributes.chain_edit
  - netprobe.ebpf.chain
options:
  interface:
    description:
      - Interface whose hook carries the chain. One of O(interface) and O(interfaces) is required.
    type: str
  interfaces:
    description:
      - The same chain on many interfaces, converged in one run under one lock. Give names, or shell patterns
        such as C(veth*) matched against the interfaces of O(netns) when the task runs (at most 256).
      - A probe is compiled at most once per host for all of them (it is loaded from bytecode on each).
      - Results are in RV(chains), one entry per interface.
    type: list
    elements: str
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
      reset_metrics:
        description:
          - When the probe's code changes, start its maps fresh instead of keeping those whose layout is
            unchanged.
        type: bool
        default: false
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
      - C(confirmed) keeps a change made with O(confirm_within) - the host no longer reverts it, and the chain's
        record (what a reboot brings back) becomes the chain as it runs now. Nothing else changes; give the
        chain's target options only. Fails, naming when and why, when the host already reverted the change. With no
        change waiting for confirmation, changes nothing.
    type: str
    default: present
    choices: [present, absent, confirmed]
  confirm_within:
    description:
      - Seconds (5 to 86400) within which a later task must confirm this run's change (O(state=confirmed)), or
        the host returns the chain to what it ran before the change by itself - with no controller and no network
        (Junos' C(commit confirmed)). For a change that may cut the host off, such as a firewall rule that drops
        the controller's ssh.
      - The revert is armed before the chain changes (a run killed midway is reverted too) - by a transient
        systemd timer where systemd runs, else by a detached process that sleeps until the deadline; it needs no
        installed unit. Until the confirmation the chain's record keeps the previous chain, so a reboot
        brings that one back.
      - A change made while another waits keeps the first revert point (the last confirmed chain) and a new
        deadline; the same run again without a change extends the deadline. Any later run of the chain without
        O(confirm_within) confirms (what it converged is what is wanted).
      - Ignored in check mode (nothing changes, nothing is armed); not with O(interfaces).
    type: int
  netns_id:
    description:
      - With O(state=absent), the inode number of the chain's network namespace, as M(netprobe.ebpf.ebpf_facts)
        reports it (C(netns_id)). When that namespace is gone (its interfaces and attachments went with it),
        only the chain's pins and metadata are left, and they are removed.
      - Namespace inodes are reused, so the leftovers are removed only if their metadata names O(netns)
        (omit O(netns) for a chain of the host's namespace). When O(netns) is still a live namespace with
        this inode, the chain is removed as usual.
    type: int
  rollback:
    description:
      - Return the chain to the spec it ran before its last change, as recorded by the engine on the host
        (the probes, their order, code, cflags and config; unchanged probes keep their program ids).
        The desired chain is then exactly the recorded one, as with O(purge=true).
      - The same atomic edits as any other change; in check mode the planned chain is reported and nothing
        changes. A second rollback changes nothing (the chain already runs the recorded spec).
      - A chain created since the last reboot has a record even before it changed, that there was no chain.
        Its rollback removes the chain (the rollback of a canary's first deployment), and a second rollback
        then changes nothing.
      - Fails, changing nothing, when no previous spec is recorded (a chain that has not changed since a
        reboot, whose history was removed, or that does not exist and had no previous spec).
      - Mutually exclusive with O(probes); needs O(state=present).
    type: bool
    default: false
requirements:
  - Python >= 3.9 and pyroute2 >= 0.9 on the target (the C(netprobe.ebpf.prereqs) role provides them)
  - root on the target (C(become=true)) for bpf(2), netlink and bpffs
  - Only for probes of your own compiled on the target (O(probes[].source), O(probes[].src)) - the bcc Python
    bindings (python3-bpfcc) and kernel headers (any installed linux-headers package as a fallback).
    Bundled probes, and images built elsewhere, load from bytecode and need neither.
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
- name: Return the chain to what it was before its last change
  netprobe.ebpf.ebpf_chain:
    interface: eth0
    rollback: true

- name: A firewall change that undoes itself unless the next task confirms it
  netprobe.ebpf.ebpf_chain:
    interface: eth0
    probes:
      - name: fw
        probe: firewall
        config:
          rules:
            - {action: drop, proto: udp, dport: 5353}
    confirm_within: 60

- name: The host is still reachable - keep the change
  netprobe.ebpf.ebpf_chain:
    interface: eth0
    state: confirmed

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
record:
  description:
    - What happened to the chain's record on the host (see O(persist)) - C(path), C(persist), and C(state) -
      C(written), C(unchanged), C(removed), C(none) (nothing recorded), C(pending) (a change waiting for
      confirmation - O(confirm_within) - leaves the record as it was until then) or C(failed) (with C(error); a
      warning, the chain itself was converged).
  returned: success, not in check mode
  type: dict
  sample: {path: /var/lib/netprobe/records/host/eth0/xdp-ingress.json, persist: true, state: written}
confirm:
  description:
    - What the run did about confirmation - C(state) is C(armed) (the change reverts at C(deadline) unless
      confirmed), C(extended) (a new deadline for a change still waiting), C(confirmed) (kept, by O(state=confirmed)
      or by this later run without O(confirm_within)) or C(none) (nothing waited); C(within) (seconds),
      C(deadline) (UTC), C(revert_to) (the probes a revert returns to, empty for no chain) and C(waker)
      (C(systemd) or C(process)).
  returned: when O(confirm_within) was given and the chain changed, or a change waiting was confirmed
  type: dict
  sample: {state: armed, within: 60, deadline: "2026-12-03T19:00:00Z", revert_to: [seen], waker: systemd}
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
removed:
  description: Pin directory and metadata file removed for a chain whose network namespace is gone.
  returned: when O(netns_id) is given and its namespace is gone
  type: list
  elements: str
previous:
  description:
    - The spec a O(rollback=true) would return to (recorded before this run's change, or earlier);
      null when none is recorded. Sources are given by their hash.
    - An empty RV(previous.probes) list means the chain did not exist before, and a rollback removes it.
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

from ansible_collections.netprobe.ebpf.plugins.module_utils import (
    _chain, _confirm, _history, _limits, _module, _orphans, _state)
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


def desired_chain(params, current, chain=None):
    """Listed probes in order; without purge, unlisted ones ride behind the listed probe before them."""
    if params['state'] == 'absent':
        return []
    if params.get('rollback'):
        return [_module.spec_from_params(p.name, p.as_params()) for p in _history.previous(chain).probes]
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
        state=dict(type='str', default='present', choices=['present', 'absent', 'confirmed']),
        confirm_within=dict(type='int'),
        interfaces=dict(type='list', elements='str'),
        netns_id=dict(type='int'),
        rollback=dict(type='bool', default=False),
    )
    argument_spec.update(_module.TARGET_ARGS)
    argument_spec['interface'] = dict(type='str')
    argument_spec.update(_module.INTERNAL_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_one_of=[('interface', 'interfaces')],
                           mutually_exclusive=[('interface', 'interfaces')])

    def desired(chain):
        return lambda current: desired_chain(module.params, current, chain)

    def body():
        params = module.params
        if params['netns_id'] is not None:
            if params['state'] != 'absent' or not params['interface']:
                raise NetprobeError('netns_id addresses one chain to remove: use it with interface and state: absent')
            if not _orphans.netns_alive(params['netns'], params['netns_id']):
                mode = params['mode'] or ('xdp' if params['hook'] == 'ingress' else 'tc')
                return _orphans.remove(params['netns_id'], params['netns'], params['interface'], mode,
                                       params['hook'], module.check_mode)
        if params['rollback'] and (params['probes'] or params['state'] == 'absent'):
            raise NetprobeError('rollback: true returns the chain to its recorded previous spec: give neither probes '
                                'nor state: absent with it')
        _confirm.check_within(params['confirm_within'])
        if params['state'] == 'confirmed' and (params['probes'] or params['rollback'] or params['confirm_within']):
            raise NetprobeError('state: confirmed keeps a change made earlier with confirm_within: give only the '
                                "chain's target (interface, netns, hook, mode), not probes, rollback or confirm_within")
        if params['confirm_within'] and params['interfaces']:
            raise NetprobeError('confirm_within arms a revert for one chain: use interface (one task per interface), '
                                'not interfaces')
        images = _module.images_from_params(params)
        if params['interface']:
            chain = _module.chain_from_params(params, images=images)
            if params['state'] == 'confirmed':
                return _confirm.confirm(module, chain)
            guard = _confirm.Guard(module, params['confirm_within'])
            result = _module.converge(module, chain, desired(chain), guard)
            if guard.confirm is not None:
                result['confirm'] = guard.confirm
            return _module.finish(module, result, images)
        if params['state'] == 'confirmed':
            raise NetprobeError('state: confirmed names one chain: use interface, not interfaces')
        interfaces = _module.expand_interfaces(params, params['interfaces'])
        chains, before, after = [], {}, {}
        with _state.HostLock():
            for name in interfaces:
                chain = _module.chain_from_params(params, name, images)
                one = _module.converge_locked(module, chain, desired(chain), _confirm.Guard(module))
                diff = one.pop('diff')
                before[name], after[name] = diff['before'], diff['after']
                chains.append(dict(one, interface=name))
        return _module.finish(module, dict(changed=any(c['changed'] for c in chains), chains=chains,
                                           diff=dict(before=before, after=after)), images)

    _module.run(module, body)


if __name__ == '__main__':
    main()
