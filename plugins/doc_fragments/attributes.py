# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Every module: where it runs.
    DOCUMENTATION = r'''
attributes:
  platform:
    support: full
    platforms: posix
    description: Linux targets with eBPF, as root (C(become=true) with an unprivileged login).
notes:
  - Needs root on the target (CAP_NET_ADMIN, and CAP_BPF or CAP_SYS_ADMIN; CAP_SYS_ADMIN also to mount bpffs).
    Logged in as an unprivileged user, run the task with C(become=true). Without those privileges the module
    fails before doing anything, in check mode too, with a message that says so and C(missing_capabilities);
    it does not return a partial, unprivileged view.
'''

    # Modules that edit a chain (ebpf_probe, ebpf_chain).
    CHAIN_EDIT = r'''
attributes:
  check_mode:
    support: full
    description: Reports the planned chain without compiling or touching the kernel.
  diff_mode:
    support: full
    description: Shows the chain (probe names and source hashes) before and after.
'''

    # Modules that read (ebpf_facts).
    READ_ONLY = r'''
attributes:
  check_mode:
    support: full
    description: Gathers the same real data in check mode.
  diff_mode:
    support: none
    description: Nothing to compare; the module reads.
'''
