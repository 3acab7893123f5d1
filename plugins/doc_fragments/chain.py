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
        C(tc) attaches a clsact C(cls_bpf) filter in direct-action mode (ingress or egress).
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
      - C(hold) (default) keeps the same probes on TC ingress during the switch, over the same maps: every
        packet meets the chain at least once; packets arriving during the switch (milliseconds) may meet
        it twice, so counters can count them twice. Dropping probes are safe.
      - C(gap) switches without a stand-in: packets arriving during the switch pass unjudged.
    type: str
    default: hold
    choices: [hold, gap]
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
    type: str
  src:
    description:
      - Path of a C file on the controller, looked up like the O(ansible.builtin.copy#module:src) of
        M(ansible.builtin.copy) (role C(files/), playbook C(files/), then relative to the playbook).
    type: path
  probe:
    description:
      - Name of a probe bundled with the collection (C(bpf/probes/<name>.c)), such as C(counter).
    type: str
  cflags:
    description:
      - Extra compiler flags, for example C(-DTHRESHOLD=100).
    type: list
    elements: str
    default: []
  config:
    description:
      - Configuration of a bundled probe (rules, prefixes, rates), as documented in C(docs/probes/<name>.md).
      - It is validated before anything changes, and a change is applied as map updates without recompiling
        (the program id stays). Probes of your own take settings as O(cflags) instead.
    type: dict
  reset_metrics:
    description:
      - When the probe's code changes, start its maps fresh. By default a patched probe keeps every map whose
        name, type and layout are unchanged (metrics and config carry on), and C(notes) says which maps
        started fresh because their layout changed.
    type: bool
    default: false
'''
