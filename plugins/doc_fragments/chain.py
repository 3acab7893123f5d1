# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # The interface hook a chain lives on.
    DOCUMENTATION = r'''
options:
  netns:
    description:
      - Network namespace of O(interface), as a name under C(/run/netns) or an absolute path such as
        C(/proc/1234/ns/net). Omit for the namespace the module runs in.
      - The module stays in the host mount namespace, so bpffs pins remain visible.
    type: str
  hook:
    description:
      - Direction of the hook.
    type: str
    default: ingress
    choices: [ingress, egress]
  mode:
    description:
      - C(xdp) attaches at the driver (ingress only, the kernel has no XDP egress hook);
        C(tc) attaches at the traffic-control hook (ingress or egress), by TCX or clsact + C(cls_bpf), see O(tc_attach).
      - Defaults to C(xdp) for O(hook=ingress) and C(tc) for O(hook=egress).
      - An XDP and a TC chain can coexist on the same interface's ingress.
    type: str
    choices: [xdp, tc]
  xdp_mode:
    description:
      - XDP attach mode. C(skb) (generic) works on every interface; C(native) needs driver support
        (veth, virtio_net, most server NICs).
    type: str
    default: skb
    choices: [skb, native]
  mode_switch:
    description:
      - How an XDP chain changes O(xdp_mode). The kernel cannot move an XDP program across modes, so the
        chain is detached and attached again.
      - C(hold) (default) keeps the same probes on TC ingress during the switch, over the same maps, so every
        packet meets the chain at least once; packets arriving during the switch (milliseconds) may meet
        it twice, so counters can count them twice. Dropping probes are safe.
      - C(gap) switches without a stand-in, and packets arriving during the switch pass unjudged.
    type: str
    default: hold
    choices: [hold, gap]
  xdp_attach:
    description:
      - How an XDP chain's head is attached. C(link) uses a C(bpf_link) (Linux 5.9+), pinned with the chain;
        a stray C(ip link set dev X xdp off) cannot remove it, and head swaps are atomic link updates.
        C(netlink) attaches through netlink as older tools do. C(auto) takes C(link) when the kernel has it
        (tried for real, not read from the version), and keeps whatever path the chain was attached by last.
      - A chain attached by another path than asked moves across on the next run (the TC ingress stand-in of
        O(mode_switch) holds it meanwhile). The facts report the path in use as C(attach.attach_path).
      - XDP runs one program per interface; when another program is attached there (another tool's, or
        libxdp's C(xdp_dispatcher)) the task fails and names it; netprobe never replaces it.
    type: str
    default: auto
    choices: [auto, link, netlink]
  tc_attach:
    description:
      - How a TC chain's head is attached. C(tcx) uses a TCX link (Linux 6.6+), pinned with the chain, at the
        place O(tc_position) declares among the hook's other TCX programs. C(cls_bpf) adds a clsact + C(cls_bpf)
        direct-action filter at netprobe's own priority and handle. C(auto) takes C(tcx) when the kernel has it
        and keeps whatever path the chain was attached by last.
      - Moving a chain between the two attaches the new way first, then removes the old one; for that instant
        both run the head, so a packet may be judged twice, never zero times.
      - Other tools' TCX programs and tc filters on the hook keep running and keep their place; they are
        listed in the facts as C(attach.foreign_programs).
    type: str
    default: auto
    choices: [auto, tcx, cls_bpf]
  tc_position:
    description:
      - Where a TCX head goes among the hook's TCX programs when it is attached, one of V(first), V(last), or a dict
        C({before; X}) or C({after; X}) with X the id of a program on the hook or the name of exactly one.
      - The place is taken when the link is created; head swaps are link updates and keep it. C(cls_bpf)
        filters always run after every TCX program.
    type: raw
    default: last
  persist:
    description:
      - Keep the chain's last-known-good on the host, under C(/var/lib/netprobe/records) - its target options, each
        probe's spec, config and bytecode - written when the chain or its record changes (an unchanged run reads
        one header line), removed with O(state=absent). M(netprobe.ebpf.ebpf_restore) rebuilds the chain from it at
        boot and when its interface is recreated, with no controller and no compiler (C(docs/persistence.md)).
      - V(false) removes the record (a reboot then leaves the chain gone until the next run). The result's
        C(record) says what was done (C(state) - C(written), C(unchanged), C(removed), C(none) or C(failed)).
    type: bool
    default: true
  _netprobe_files:
    description:
      - Internal. The C files of the collection's C(bpf/) directory, read on the controller and sent by
        the module's action plugin. Do not set it.
    type: dict
  _netprobe_images:
    description:
      - Internal. Prebuilt bytecode of the bundled probes the task uses, sent by the action plugin.
        Do not set it.
    type: dict
notes:
  - Requires root and pyroute2 on the target. Bundled probes load prebuilt bytecode and need no compiler;
    probes of your own are compiled once per host with bcc (C(python3-bpfcc)), then loaded from the host's
    cache (C(/var/cache/netprobe/images)). The C(netprobe.ebpf.prereqs) role installs what is needed.
  - bpffs is mounted at C(/sys/fs/bpf) when it is not. Pins live under C(/sys/fs/bpf/netprobe),
    metadata under C(/run/netprobe); both vanish at reboot, like the attachments, and the next run rebuilds them.
  - Writers on one host are serialised with a lock on C(/run/netprobe/lock).
  - When no headers match the running kernel, the newest installed C(linux-headers-*) are used
    with a warning (XDP and TC probes only need the stable UAPI headers).
'''

    # How a probe's code is given.
    PROBE_CODE = r'''
options:
  source:
    description:
      - The probe's C code, inline. See C(docs/probe-authoring.md) for the API of C(netprobe.h).
      - Exactly one of O(source), O(src) and O(probe) is needed to add or change a probe.
      - At most 1 MiB.
    type: str
  src:
    description:
      - Path of a C file on the controller, looked up like the O(ansible.builtin.copy#module:src) of
        M(ansible.builtin.copy) (role C(files/), playbook C(files/), then relative to the playbook).
      - It must be a regular file (not a device, FIFO or directory) of at most 1 MiB; this is checked on
        the controller before anything is sent.
    type: path
  probe:
    description:
      - Name of a probe bundled with the collection (C(bpf/probes/<name>.c)), such as C(counter).
    type: str
  cflags:
    description:
      - Extra compiler flags, for example C(-DTHRESHOLD=100).
      - At most 64 flags of at most 1024 characters each.
    type: list
    elements: str
    default: []
  config:
    description:
      - Configuration of a bundled probe (rules, prefixes, rates), as documented in C(docs/probes/<name>.md).
      - It is validated before anything changes, and a change is applied as map updates without recompiling
        (the program id stays). Probes of your own take settings as O(cflags) instead.
      - At most 256 KiB as JSON.
    type: dict
  reset_metrics:
    description:
      - When the probe's code changes, start its maps fresh. By default a patched probe keeps every map whose
        name, type and layout are unchanged (metrics and config carry on), and C(notes) says which maps
        started fresh because their layout changed.
    type: bool
    default: false
'''
