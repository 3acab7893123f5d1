#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ebpf_gadget
short_description: Run an eBPF gadget or a tracer of your own for a bounded time and return what it saw
version_added: 0.1.0
description:
  - Loads a gadget (a small eBPF program and its reader), runs it for O(duration) seconds or until
    O(max_events) events, and returns typed records. Like Inspektor Gadget's gadgets and bcc's tools,
    agentless - nothing keeps running on the host afterwards.
  - "Bundled gadgets: C(trace_tcp) (TCP connects, accepts, closes), C(trace_drop) (packets the kernel
    dropped, with its reason), C(trace_dns) (DNS queries and answers on interfaces), C(top_talkers)
    (bytes and packets per flow per interval), C(snapshot_socket) (TCP and UDP sockets of a network
    namespace), C(profile_tcprtt) (histogram of TCP round-trip times) and C(capture) (packets written as a
    pcap file), and C(chain_events) (messages and packet samples the probes of a netprobe chain send with
    C(np_emit) and C(np_sample), read from the chain's ring buffer; samples can be written as a pcap file,
    which is how to capture at a position in a chain). Each is documented in docs/gadgets/<name>.md of the
    collection."
  - O(tracer) runs C of your own instead, attached where you declare, with events decoded by the
    layout you declare, filtered and returned like the bundled gadgets' events.
  - Every kernel object of a run is held by the module process's file descriptors only (no pins), so
    it goes away when the module exits, also when it is killed. tracefs is mounted only for
    tracepoint attaches (raw tracepoints and socket filters need none), and unmounted again right after
    the attach if this run mounted it; a run killed before that leaves a mount that the next gadget run
    removes.
  - Parameters and filters are values of the program's maps, not compile-time constants; the compiled
    program is cached per kernel under /var/cache/netprobe/gadgets, so a repeat run with other params
    or filters compiles nothing.
author:
  - netprobe.ebpf contributors (@netprobe)
attributes:
  check_mode:
    support: full
    description: Validates everything and reports what the run would load and attach, loading nothing.
  diff_mode:
    support: none
    description: A gadget run changes nothing, so there is nothing to diff.
  platform:
    support: full
    platforms: posix
    description: Linux targets with eBPF, as root (C(become=true) with an unprivileged login).
options:
  gadget:
    description:
      - A bundled gadget by name.
    type: str
    choices: [trace_tcp, trace_drop, trace_dns, top_talkers, snapshot_socket, profile_tcprtt, capture, chain_events]
  tracer:
    description:
      - A tracer of your own (C compiled with bcc on the target). The C includes nothing itself
        (the gadget header is prepended) and sends each event with C(npg_emit(&event, sizeof(event))).
      - "It may filter in the kernel on integer fields declared with O(tracer.fields[].kernel_filter) -
        C(u64 *v = npg_values(); npg_set(v, NPG_F_<FIELD>, value); if (!npg_pass(npg_config(), v)) return 0;)"
    type: dict
    suboptions:
      name:
        description: A name for the tracer in results and messages.
        type: str
        default: custom
      source:
        description: The C, inline.
        type: str
      src:
        description: A file of the playbook (files/, role or playbook directory) holding the C.
        type: path
      attach:
        description: Where the functions attach.
        type: list
        elements: dict
        required: true
        suboptions:
          type:
            description:
              - C(tracepoint) (C(category:event), use bcc's C(TRACEPOINT_PROBE) or a function taking the
                event's struct), C(raw_tracepoint) (the event name; the function gets
                C(struct bpf_raw_tracepoint_args *)), or C(kprobe) (a kernel function; only where the
                kernel has kprobes).
            type: str
            required: true
            choices: [tracepoint, raw_tracepoint, kprobe]
          target:
            description: The tracepoint, raw tracepoint or kernel function.
            type: str
            required: true
          function:
            description: The C function to attach there.
            type: str
            required: true
      fields:
        description:
          - The layout of the event struct the C emits, in order; C alignment rules apply.
        type: list
        elements: dict
        required: true
        suboptions:
          name:
            description: Field name (lower case).
            type: str
            required: true
          type:
            description:
              - C(u8) C(u16) C(u32) C(u64) C(s8) C(s16) C(s32) C(s64), C(ipv4) (4 bytes, network order),
                C(ipv6) (16 bytes), or C(strN) (a char array of N bytes, N 1-256).
            type: str
            required: true
          kernel_filter:
            description: The C sets this field with C(npg_set) before C(npg_pass), so filters on it run in the kernel.
            type: bool
            default: false
          doc:
            description: What the field means.
            type: str
  duration:
    description:
      - How long to run, in seconds (0.1 to 3600). Snapshot gadgets ignore it.
    type: float
    default: 10.0
  max_events:
    description:
      - Stop after this many events (1 to 100000). At most this many are kept, so memory is bounded
        whatever the event rate; C(truncated) says when the limit ended the run. For C(capture) it is
        also the number of packets the kernel sends at most.
    type: int
    default: 1000
  interval:
    description:
      - Top gadgets - one table per interval of this many seconds (default - one for the whole run).
    type: float
  sort_by:
    description:
      - Field to sort rows by, C(-field) for descending. Top, snapshot and profile gadgets have a default
        (C(-bytes), C(sport), C(-count)).
    type: str
  max_rows:
    description:
      - Rows kept per table (1 to 10000), after sorting.
    type: int
    default: 20
  filter:
    description:
      - Expressions C(field OP value), OP one of C(==), C(!=), C(<), C(>) and C(~) (regular expression). All
        must hold. Filters on integer fields the program tests (ports, pid, netns_id, ifindex, proto,
        reason) run in the kernel, so the rest never crosses to user space; the others run in the module.
    type: list
    elements: str
    default: []
  fields:
    description:
      - Columns to return, in this order (default - all of the gadget's fields).
    type: list
    elements: str
  netns:
    description:
      - Network namespace to watch - a name under /run/netns or a path. Trace gadgets on tracepoints
        report every namespace unless this is set (then only this one, filtered in the kernel); packet
        gadgets and snapshot_socket work in this namespace (default - the module's own).
    type: str
  interfaces:
    description:
      - Interfaces (in O(netns)) to watch; default - all of them.
    type: list
    elements: str
    default: []
  params:
    description:
      - Parameters of the gadget, validated per gadget (see each gadget's documentation), e.g. C(port)
        for trace_dns, C(snaplen) and C(path) for capture, C(per_address) for profile_tcprtt,
        C(max_flows) for top_talkers, and C(buffer_kb) (ring buffer size) for every eBPF gadget.
    type: dict
    default: {}
  _netprobe_gadget_files:
    description:
      - Internal. The C of C(bpf/gadgets/) (the header and the gadget's file), read on the controller and sent by
        the module's action plugin. Do not set it.
    type: dict
  run_tag:
    description:
      - Label of this run; the programs it loads are named C(npg_<run_tag>) (see C(bpftool prog)).
        Default - random. 1-11 lower-case letters or digits.
    type: str
requirements:
  - bcc Python bindings (python3-bpfcc), only for the first run of a gadget on a kernel
  - pyroute2 >= 0.9
  - a kernel with BTF (/sys/kernel/btf/vmlinux) for trace_tcp, trace_drop and profile_tcprtt
notes:
  - Needs root on the target (CAP_NET_ADMIN, and CAP_BPF or CAP_SYS_ADMIN; CAP_SYS_ADMIN also to mount bpffs).
    Logged in as an unprivileged user, run the task with C(become=true). Without those privileges the module
    fails before doing anything, in check mode too, with a message that says so and C(missing_capabilities);
    it does not return a partial, unprivileged view.
  - Programs used here - raw tracepoints, tracepoints, socket filters on packet sockets; no kprobes or
    fentry, so the gadgets run on kernels without them.
seealso:
  - name: Inspektor Gadget
    description: The gadgets whose names, columns and params these follow.
    link: https://inspektor-gadget.io/
'''

EXAMPLES = r'''
- name: Who connects where, for 10 seconds
  netprobe.ebpf.ebpf_gadget:
    gadget: trace_tcp
    duration: 10
    filter: ["event == connect"]

- name: Packets the kernel drops in a namespace, and why
  netprobe.ebpf.ebpf_gadget:
    gadget: trace_drop
    netns: lab
    duration: 5
    fields: [time, reason, proto, saddr, daddr, dport, interface]

- name: Top talkers on eth0, one table every 2 seconds, top 5
  netprobe.ebpf.ebpf_gadget:
    gadget: top_talkers
    interfaces: [eth0]
    duration: 10
    interval: 2
    max_rows: 5

- name: 100 DNS packets to a pcap file, then fetch it
  block:
    - name: Capture
      netprobe.ebpf.ebpf_gadget:
        gadget: capture
        interfaces: [eth0]
        filter: ["dport == 53"]
        max_events: 100
        duration: 30
        params: {snaplen: 512, path: /tmp/dns.pcap}
    - name: Fetch
      ansible.builtin.fetch:
        src: /tmp/dns.pcap
        dest: captures/

- name: A tracer of your own - every exec with its pid and command
  netprobe.ebpf.ebpf_gadget:
    duration: 5
    tracer:
      name: execs
      attach: [{type: raw_tracepoint, target: sched_process_exec, function: on_exec}]
      fields: [{name: pid, type: u32, kernel_filter: true}, {name: comm, type: str16}]
      source: |
        struct ev { u32 pid; char comm[16]; };
        int on_exec(struct bpf_raw_tracepoint_args *ctx)
        {
            struct ev e = {};
            e.pid = bpf_get_current_pid_tgid() >> 32;
            struct npg_config *c = npg_config();
            u64 *v = npg_values();
            if (!c || !v)
                return 0;
            npg_set(v, NPG_F_PID, e.pid);
            if (!npg_pass(c, v))
                return 0;
            bpf_get_current_comm(&e.comm, sizeof(e.comm));
            npg_emit(&e, sizeof(e));
            return 0;
        }
'''

RETURN = r'''
gadget:
  description: The gadget that ran (the tracer's name for a tracer).
  returned: always
  type: str
  sample: trace_tcp
kind:
  description: trace, top, snapshot, profile or capture; says which of events, intervals, rows, histogram comes back.
  returned: always
  type: str
events:
  description: Trace and capture gadgets - the events, in the order the kernel emitted them, with the requested fields.
  returned: kind is trace or capture
  type: list
  elements: dict
  sample: [{time: "2026-12-01T09:58:01.123456Z", event: connect, pid: 4242, comm: curl, netns: lab,
            saddr: 198.18.1.1, sport: 40112, daddr: 198.18.1.2, dport: 80}]
intervals:
  description: Top gadgets - one table per interval (interval, time, flows, rows).
  returned: kind is top
  type: list
  elements: dict
rows:
  description: Snapshot gadgets - the rows; top gadgets - totals over the whole run. Sorted, at most max_rows.
  returned: kind is top or snapshot
  type: list
  elements: dict
histogram:
  description: profile_tcprtt - one histogram per address (or one), with count, avg_us and log2 buckets.
  returned: kind is profile
  type: list
  elements: dict
lost:
  description: Events the kernel could not deliver (ring buffer full) or flows and buckets that did not fit its table, counted in the kernel.
  returned: always
  type: int
truncated:
  description: True when max_events (or max_rows for snapshots) cut the result short.
  returned: always
  type: bool
pcap:
  description: The pcap file written on the target.
  returned: kind is capture, or chain_events with params.path
  type: str
packets:
  description: Packets written to the pcap file.
  returned: kind is capture, or chain_events with params.path
  type: int
cost:
  description: What the run cost - wall_s, compile_s (0 when the compiled image was cached), load_s, read_s,
    image (compiled or cached), events_read (records from the kernel), events_kept, filtered (dropped by module filters).
  returned: always
  type: dict
programs:
  description: Ids of the programs the run loaded (gone when it ended).
  returned: when the gadget loads programs
  type: list
  elements: int
kernel_filters:
  description: Filters the kernel applied.
  returned: when the gadget loads programs
  type: list
  elements: str
module_filters:
  description: Filters the module applied to decoded events.
  returned: when the gadget loads programs
  type: list
  elements: str
run_tag:
  description: The run's tag; its programs were named npg_<run_tag>.
  returned: always
  type: str
chain:
  description: chain_events - the chain that was read (interface, chain, probes).
  returned: gadget is chain_events
  type: dict
plan:
  description: Check mode - what the run would load, attach and filter.
  returned: check mode
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_run import GadgetRun, RunOptions
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_specs import custom_spec, find
from ansible_collections.netprobe.ebpf.plugins.module_utils._module import run

FIELD_SPEC = dict(name=dict(type='str', required=True), type=dict(type='str', required=True),
                  kernel_filter=dict(type='bool', default=False), doc=dict(type='str'))
ATTACH_SPEC = dict(type=dict(type='str', required=True, choices=['tracepoint', 'raw_tracepoint', 'kprobe']),
                   target=dict(type='str', required=True), function=dict(type='str', required=True))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            gadget=dict(type='str', choices=['trace_tcp', 'trace_drop', 'trace_dns', 'top_talkers', 'snapshot_socket',
                                             'profile_tcprtt', 'capture', 'chain_events']),
            tracer=dict(type='dict', options=dict(
                name=dict(type='str', default='custom'), source=dict(type='str'), src=dict(type='path'),
                attach=dict(type='list', elements='dict', required=True, options=ATTACH_SPEC),
                fields=dict(type='list', elements='dict', required=True, options=FIELD_SPEC))),
            duration=dict(type='float', default=10.0),
            max_events=dict(type='int', default=1000),
            interval=dict(type='float'),
            sort_by=dict(type='str'),
            max_rows=dict(type='int', default=20),
            filter=dict(type='list', elements='str', default=[]),
            fields=dict(type='list', elements='str'),
            netns=dict(type='str'),
            interfaces=dict(type='list', elements='str', default=[]),
            params=dict(type='dict', default={}),
            run_tag=dict(type='str'),
            _netprobe_gadget_files=dict(type='dict', no_log=False),
        ),
        mutually_exclusive=[('gadget', 'tracer')],
        required_one_of=[('gadget', 'tracer')],
        supports_check_mode=True,
    )
    p = module.params

    def body():
        files = dict(p['_netprobe_gadget_files'] or {})
        if p['tracer']:
            spec = custom_spec(p['tracer'])
            files['source'] = p['tracer'].get('source')
        else:
            spec = find(p['gadget'])
        opts = RunOptions(duration=p['duration'], max_events=p['max_events'], interval=p['interval'],
                          sort_by=p['sort_by'], max_rows=p['max_rows'], filter=p['filter'], fields=p['fields'],
                          netns=p['netns'], interfaces=p['interfaces'], params=p['params'], run_tag=p['run_tag'])
        gadget = GadgetRun(spec, opts, files)
        if module.check_mode:
            return dict(changed=False, plan=gadget.plan(), gadget=spec.name, kind=spec.kind, run_tag=gadget.tag,
                        lost=0, truncated=False, cost={})
        result = gadget.run()
        for w in gadget.warnings:
            module.warn(w)
        result['changed'] = False
        return result

    run(module, body)


if __name__ == '__main__':
    main()
