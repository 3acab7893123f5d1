/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Chain plumbing, part 1: included by the engine before a probe's source.
 * The engine defines NP_SLOT (this probe's slot: progs[NP_SLOT] holds its
 * successor), NP_CHAIN_SIZE, NP_CHAIN_PIN and NP_META_PIN.
 * See docs/chain-protocol.md.
 */
#ifndef NETPROBE_CHAIN_H
#define NETPROBE_CHAIN_H

#include "netprobe.h"

BPF_TABLE_PINNED("prog", int, int, np_chain, NP_CHAIN_SIZE, NP_CHAIN_PIN);
BPF_TABLE_PINNED("percpu_array", int, struct np_meta, np_meta_store, 1, NP_META_PIN);

/* This packet's metadata (never NULL in practice; check anyway). */
static __always_inline struct np_meta *np_meta(np_ctx_t *ctx)
{
	int zero = 0;
	return np_meta_store.lookup(&zero);
}

#endif
