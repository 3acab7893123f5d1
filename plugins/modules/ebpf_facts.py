#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ebpf_facts
short_description: Gather eBPF capabilities, probe chains and probe metrics as facts
version_added: 0.1.0
description:
  - Returns C(ansible_facts.netprobe) with three parts, each of which can be left out with O(gather_subset).
  - C(capabilities), what the kernel and libraries can do, tested for real where it is cheap. Attach tests
    run in a throwaway network namespace of a child process that vanishes with it.
  - C(chains), every netprobe chain on the host (per network namespace, interface and hook) as the kernel
    has it now, with drift against the last apply.
  - C(metrics), the maps the probes declare with C(NP_METRIC(map, NP_EXPORT)), decoded from the layouts
    recorded at compile time (no compiler runs, bcc is not imported).
  - Never changes anything. Maps declared C(NP_EMPTY) or C(NP_SWAP) are read without a reset here; to
    reset them, use M(netprobe.ebpf.ebpf_metrics_info) with O(netprobe.ebpf.ebpf_metrics_info#module:consume=true).
  - Can be listed in C(ansible_facts_modules) next to C(ansible.builtin.setup).
author:
  - netprobe.ebpf contributors (@netprobe)
extends_documentation_fragment:
  - netprobe.ebpf.attributes
  - netprobe.ebpf.attributes.read_only
  - netprobe.ebpf.gather
attributes:
  facts:
    support: full
    description: Returns C(ansible_facts.netprobe).
options:
  gather_subset:
    description:
      - What to gather. C(all) means C(capabilities), C(chains) and C(metrics). An entry starting with
        C(!) leaves that part out, for example V(["all", "!capabilities"]).
    type: list
    elements: str
    default: [all]
    choices: [all, capabilities, chains, metrics, '!capabilities', '!chains', '!metrics']
  measure_cost:
    description:
      - Seconds of live traffic over which to measure what each chain costs (more than 0, at most 60; 0 does not
        measure). The kernel counts the runs and run time of each chain's head program only for that window
        (C(BPF_ENABLE_STATS); the accounting goes off when the module ends, also when it is killed), and each
        chain gets C(cost).
      - The probes a chain's head reaches by tail calls run inside the head's accounting, so the figure is the
        whole chain's (a chain of one probe gives that probe's own cost). Needs the C(chains) subset.
    type: float
    default: 0
notes:
  - Without root (an unprivileged login without C(become)) it fails rather than report what it can read;
    chains live in a 0700 bpffs and C(/run/netprobe), so an unprivileged view would claim no chains where
    there are some.
  - Metrics are keyed and rendered as described in C(docs/metrics.md). Per-CPU values are summed.
  - Entries of a probe declared with C(NP_SWAP) are the sum of its two copies (what accumulated since the
    last swap read).
requirements:
  - pyroute2 >= 0.9 (for chains and the attach capabilities)
seealso:
  - module: netprobe.ebpf.ebpf_metrics_info
  - module: netprobe.ebpf.ebpf_chain
'''

EXAMPLES = r'''
- name: Everything
  netprobe.ebpf.ebpf_facts:

- name: Show the chains on eth0
  ansible.builtin.debug:
    var: ansible_facts.netprobe.chains

- name: Only the metrics of the counter probe, with per-CPU breakdown
  netprobe.ebpf.ebpf_facts:
    gather_subset: [metrics]
    probes: [count]
    per_cpu: true

- name: What each chain on eth0 costs per packet, over 5 seconds of live traffic
  netprobe.ebpf.ebpf_facts:
    gather_subset: [chains]
    interfaces: [eth0]
    measure_cost: 5
  register: cost

- name: As a facts module of the play
  hosts: probes
  vars:
    ansible_facts_modules: [ansible.builtin.setup, netprobe.ebpf.ebpf_facts]
  tasks:
    - name: Fail when a chain drifted
      ansible.builtin.assert:
        that: ansible_facts.netprobe.chains | map(attribute='drift') | flatten | length == 0
'''

RETURN = r'''
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: complex
  contains:
    netprobe:
      description: Capabilities, chains and metrics, for the subsets gathered.
      returned: always
      type: complex
      contains:
        capabilities:
          description:
            - kernel_release, kernel_version, architecture, btf, bpffs_mounted, jit_enabled, possible_cpus,
              prog_type_xdp, prog_type_tc, xdp_generic, xdp_native, xdp_link, tc_clsact, tcx, batch_map_ops, ring_buffer,
              bcc (available, version, path), pyroute2_version, kernel_headers (kind exact, kheaders, fallback
              or none; path), probe_errors (why a test said false).
            - builds says how this host can obtain probe programs. C(bytecode) is always true (bundled probes'
              prebuilt images and images cached on the host load with bpf(2), no compiler). C(bcc) is true when
              bcc imports and kernel headers are usable, so custom C can be compiled here. A host without
              it runs custom probes only from images built elsewhere (see docs/bytecode.md).
          returned: when gathered
          type: dict
        chains:
          description:
            - One entry per chain, with interface, netns, netns_id, hook, mode, xdp_mode, attached, head_prog_id,
              pin_dir, drift (list of differences with the last apply) and probes in order (name, position,
              slot, prog_id, tag, source_hash, spec_hash, origin, config, metrics with their features, lost,
              and swap with the active copy for probes with an NP_SWAP metric).
            - Each chain also has C(persistence) - C(record) (the path of its last-known-good, null when there is
              none), C(persist) (false when the chain opted out), C(drift) (the live chain differs from its record,
              or a persisted chain has no record) and C(restored) (null, or the last restore's C(outcome), C(reason),
              C(record), C(trigger), C(at) and C(metrics_fresh) - a restored chain's metrics started at the restore)
              and C(confirm) (null, or a change waiting for confirmation - C(state=pending), C(deadline),
              C(revert_to) - or the last unconfirmed change the host reverted - C(state=reverted), C(at), C(reason)).
              See C(docs/persistence.md).
            - With O(measure_cost), each chain has C(cost) - C(seconds), C(runs) (packets the chain ran for),
              C(run_time_ns), C(ns_per_run) and C(runs_per_second) - or null for a chain not attached.
          returned: when gathered
          type: list
          elements: dict
        restore:
          description:
            - What the last restore since the boot did (M(netprobe.ebpf.ebpf_restore), the boot unit, the udev rule),
              from C(/run/netprobe/restore.json) - C(last_run) (trigger, duration_s, counts) and C(chains), per
              chain its latest outcome (restored, unchanged, skipped, failed) with its reason, including chains that
              could not be restored. Null when no restore ran since the boot.
          returned: when chains are gathered
          type: dict
        metrics:
          description:
            - One entry per exported metric map, with netns, interface, hook, mode, probe, map, type, features,
              max_entries, count, read (C(peek) here), method (C(batch) or C(iterate)), sorted_by for sorted
              maps, and entries (list of key, value and, with O(per_cpu), per_cpu).
          returned: when gathered
          type: list
          elements: dict
          sample:
            - probe: count
              map: by_proto
              interface: eth0
              features: [export, counter]
              entries:
                - {key: {l3_proto: 2048, l4_proto: 17}, value: {packets: 100, bytes: 7400}}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netprobe.ebpf.plugins.module_utils import _capabilities, _cost, _facts, _module

SUBSETS = ('capabilities', 'chains', 'metrics')


def wanted_subsets(gather_subset):
    wanted = set()
    for entry in gather_subset:
        if entry == 'all':
            wanted.update(SUBSETS)
        elif not entry.startswith('!'):
            wanted.add(entry)
    if not wanted:
        wanted.update(SUBSETS)
    for entry in gather_subset:
        if entry.startswith('!'):
            wanted.discard(entry[1:])
    return wanted


def main():
    argument_spec = dict(
        gather_subset=dict(type='list', elements='str', default=['all'],
                           choices=['all'] + list(SUBSETS) + ['!' + s for s in SUBSETS]),
        measure_cost=dict(type='float', default=0),
    )
    argument_spec.update(_facts.GATHER_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    def body():
        subsets = wanted_subsets(module.params['gather_subset'])
        measure = module.params['measure_cost']
        if measure and 'chains' not in subsets:
            module.fail_json(msg='measure_cost measures chains: add chains to gather_subset')
        if measure:
            _cost.check_seconds(measure)
        warnings = []
        facts = _facts.gather(_facts.Filters(module.params), subsets, consume=False, warnings=warnings)
        if measure:
            _facts.add_cost(facts['chains'], measure)
        if 'capabilities' in subsets:
            facts['capabilities'] = _capabilities.gather()
        for w in warnings:
            module.warn(w)
        return dict(changed=False, ansible_facts={'netprobe': facts})

    _module.run(module, body)


if __name__ == '__main__':
    main()
