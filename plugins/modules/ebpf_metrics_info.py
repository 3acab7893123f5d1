#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ebpf_metrics_info
short_description: Read eBPF probe metrics, with reset-after-read, swap reads and Prometheus export
version_added: 0.1.0
description:
  - Returns the metric maps of the probes (maps declared with C(NP_METRIC(map, NP_EXPORT))) as ordinary result
    keys, decoded the same way as M(netprobe.ebpf.ebpf_facts) does.
  - With O(consume=true) the declared read semantics apply. A map declared C(NP_EMPTY) is reset after the
    read, so the next read shows only new traffic. A probe with a map declared C(NP_SWAP) is flipped to its
    twin copy with one atomic write to the link that leads to it now, and its former copy, which no packet
    reaches any more, is read and cleared. Successive swap reads add up to exactly the traffic seen, even while
    traffic flows and after probes before it were removed or inserted.
  - Without O(consume), nothing is reset and the module changes nothing (like M(netprobe.ebpf.ebpf_facts)).
  - Optionally writes the metrics, and the chains, in the Prometheus text format for node_exporter's textfile
    collector, replacing the file atomically. Names and labels are in C(docs/metrics.md).
author:
  - netprobe.ebpf contributors (@netprobe)
attributes:
  check_mode:
    support: full
    description: Reads the real metrics; resets, swaps and the file write are skipped and reported as changes.
  diff_mode:
    support: none
    description: Results are metrics, not a before and after.
extends_documentation_fragment:
  - netprobe.ebpf.attributes
  - netprobe.ebpf.gather
options:
  consume:
    description:
      - Apply the maps' read semantics, reset (C(NP_EMPTY)) and swap (C(NP_SWAP)). The result is then
        C(changed).
      - Reads with O(consume=true) are the ones to add up over time; use one reader per host, or the readers
        share the traffic between them.
    type: bool
    default: false
  prometheus_textfile:
    description:
      - Write the metrics, and chain and probe state, to this file in the Prometheus text format (a
        temporary file in the same directory, then a rename), only when its content differs; the result is
        C(changed) when the file was written. node_exporter's textfile collector reads files ending in C(.prom)
        from its C(--collector.textfile.directory).
      - Fields of maps a probe declares C(NP_COUNTER) are counters named C(netprobe_<map>_<field>_total); the
        fields of other maps are the gauge C(netprobe_map_value). No label names the loaded program, so patching
        a probe keeps every series. The names are in the collection's C(docs/metrics.md).
    type: path
  measure_cost:
    description:
      - Seconds of live traffic over which to measure what each chain costs, as M(netprobe.ebpf.ebpf_facts)'s
        option of that name (more than 0, at most 60; 0 does not measure). The result then has C(chains), each
        with C(cost), and O(prometheus_textfile) gets C(netprobe_chain_cost_ns_per_packet) and
        C(netprobe_chain_cost_packets_per_second).
    type: float
    default: 0
requirements:
  - pyroute2 >= 0.9 (for swap reads and chain state)
seealso:
  - module: netprobe.ebpf.ebpf_facts
'''

EXAMPLES = r'''
- name: Read and reset the counters of the probes on eth0, every run shows the traffic since the last one
  netprobe.ebpf.ebpf_metrics_info:
    interfaces: [eth0]
    consume: true
  register: traffic

- name: Export for node_exporter
  netprobe.ebpf.ebpf_metrics_info:
    prometheus_textfile: /var/lib/node_exporter/textfile_collector/netprobe.prom

- name: Export with what each chain cost per packet over 5 seconds of live traffic
  netprobe.ebpf.ebpf_metrics_info:
    prometheus_textfile: /var/lib/node_exporter/textfile_collector/netprobe.prom
    measure_cost: 5

- name: The ten largest talkers
  netprobe.ebpf.ebpf_metrics_info:
    probes: [talkers]
    top: 10
    sort_by: bytes
'''

RETURN = r'''
metrics:
  description:
    - One entry per exported metric map, as in the C(metrics) of M(netprobe.ebpf.ebpf_facts), where C(read) says
      how it was read, C(peek) (nothing changed), C(reset) (read then emptied) or C(swap) (the quiescent copy,
      read then emptied).
  returned: always
  type: list
  elements: dict
chains:
  description: The chains read, as in M(netprobe.ebpf.ebpf_facts), when O(prometheus_textfile) or O(measure_cost) is set.
  returned: when O(prometheus_textfile) or O(measure_cost) is set
  type: list
  elements: dict
prometheus_textfile:
  description: The file written.
  returned: when O(prometheus_textfile) is set
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netprobe.ebpf.plugins.module_utils import _cost, _facts, _metrics, _module


def main():
    argument_spec = dict(
        consume=dict(type='bool', default=False),
        prometheus_textfile=dict(type='path'),
        measure_cost=dict(type='float', default=0),
    )
    argument_spec.update(_facts.GATHER_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    def body():
        params = module.params
        consume = params['consume'] and not module.check_mode
        measure = params['measure_cost']
        if measure:
            _cost.check_seconds(measure)
        subsets = ['metrics'] + (['chains'] if params['prometheus_textfile'] or measure else [])
        warnings = []
        gathered = _facts.gather(_facts.Filters(params), subsets, consume=consume, warnings=warnings)
        result = dict(changed=False, metrics=gathered['metrics'])
        if measure:
            _facts.add_cost(gathered['chains'], measure)
            result['chains'] = gathered['chains']
        if params['consume']:
            would_reset = any(set(m['features']) & set(['empty', 'swap']) for m in gathered['metrics'])
            result['changed'] = _facts.changed_by(gathered['metrics']) if consume else would_reset
        path = params['prometheus_textfile']
        if path:
            written = _metrics.write_textfile(path, _metrics.prometheus_text(gathered['chains'], gathered['metrics']),
                                              check_mode=module.check_mode)
            result.update(chains=gathered['chains'], prometheus_textfile=path, changed=result['changed'] or written)
        for w in warnings:
            module.warn(w)
        return result

    _module.run(module, body)


if __name__ == '__main__':
    main()
