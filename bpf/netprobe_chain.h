/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Chain plumbing, part 1: included by the engine before a probe's source.
 * The engine defines NP_SLOT (a placeholder it relocates to this copy's slot:
 * progs[slot] holds its successor) and NP_CHAIN_SIZE. np_chain and
 * np_meta_store are relocated to the chain's pinned maps when the program is
 * loaded. See docs/chain-protocol.md and docs/bytecode.md.
 */
#ifndef NETPROBE_CHAIN_H
#define NETPROBE_CHAIN_H

#include "netprobe.h"

BPF_PROG_ARRAY(np_chain, NP_CHAIN_SIZE);
BPF_PERCPU_ARRAY(np_meta_store, struct np_meta, 1);

/* This packet's metadata (never NULL in practice; check anyway). */
static __always_inline struct np_meta *np_meta(np_ctx_t *ctx)
{
	int zero = 0;
	return np_meta_store.lookup(&zero);
}

#endif
