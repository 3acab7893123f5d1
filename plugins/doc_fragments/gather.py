# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # The selection and rendering options of ebpf_facts and ebpf_metrics_info (_facts.GATHER_ARGS).
    DOCUMENTATION = r'''
options:
  interfaces:
    description:
      - Only chains on these interfaces (at most 1024 entries).
    type: list
    elements: str
  netns:
    description:
      - Only chains in these network namespaces, given as when they were applied (a name under C(/run/netns),
        a path, or C(host)), or as the namespace inode number.
    type: list
    elements: str
  probes:
    description: Only these probes (by name), in chains and metrics.
    type: list
    elements: str
  per_cpu:
    description: Add the per-CPU breakdown (C(per_cpu), a list indexed by CPU) to entries of per-CPU maps.
    type: bool
    default: false
  top:
    description:
      - For maps declared C(NP_SORTED), return only the N largest entries. C(0) returns them all.
    type: int
    default: 10
  sort_by:
    description:
      - For maps declared C(NP_SORTED), the value field to sort by, as a dotted path (C(bytes), C(stats.drops)).
        Default is the first numeric field of the value.
    type: str
'''
