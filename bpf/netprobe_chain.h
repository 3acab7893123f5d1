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
/* Events to user space (DeChainy's control-plane messages and packet samples): one ring buffer per
 * chain, created when a probe first uses it; read by netprobe.ebpf.ebpf_gadget (chain_events). */
BPF_RINGBUF_OUTPUT(np_events, NP_EVENTS_PAGES);
BPF_PERCPU_ARRAY(np_events_lost, __u64, 1);

/* This packet's metadata (never NULL in practice; check anyway). */
static __always_inline struct np_meta *np_meta(np_ctx_t *ctx)
{
	int zero = 0;
	return np_meta_store.lookup(&zero);
}


static __always_inline struct np_event *np_event_reserve(np_ctx_t *ctx, __u32 kind, __u32 size)
{
	struct np_event *e = np_events.ringbuf_reserve(size);
	int zero = 0;

	if (!e) {
		__u64 *lost = np_events_lost.lookup(&zero);
		if (lost)
			*lost += 1;
		return 0;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->ifindex = np_ifindex(ctx);
	e->pkt_len = np_data_end(ctx) - np_data(ctx);
	e->slot = NP_SLOT;
	e->_pad = 0;
	return e;
}

/*
 * np_emit(ctx, kind, data, len): send a message of len bytes (a constant, at most NP_MSG_MAX) to
 * user space. kind is yours (NP_EVENT_USER or more). Returns 0, or -1 when the ring buffer was full
 * (counted as lost).
 */
static __always_inline int np_emit(np_ctx_t *ctx, __u32 kind, const void *data, __u32 len)
{
	struct np_event *e;

	if (len > NP_MSG_MAX)
		len = NP_MSG_MAX;
	e = np_event_reserve(ctx, kind, sizeof(struct np_event) + NP_MSG_MAX);
	if (!e)
		return -1;
	e->cap_len = len;
	__builtin_memcpy(e->data, data, len);
	np_events.ringbuf_submit(e, 0);
	return 0;
}

/*
 * np_sample(ctx, snaplen): send the first snaplen bytes of the packet (at most NP_SAMPLE_MAX, a power
 * of two) to user
 * space, as kind NP_EVENT_SAMPLE. Returns 0, or -1 when the ring buffer was full (counted as lost).
 * XDP samples need Linux 5.18 (bpf_xdp_load_bytes).
 */
static __always_inline int np_sample(np_ctx_t *ctx, __u32 snaplen)
{
	struct np_event *e = np_event_reserve(ctx, NP_EVENT_SAMPLE, sizeof(struct np_event) + NP_SAMPLE_MAX);
	__u32 cap;

	if (!e)
		return -1;
	cap = e->pkt_len < snaplen ? e->pkt_len : snaplen;
	if (cap > NP_SAMPLE_MAX)
		cap = NP_SAMPLE_MAX;
	e->cap_len = 0;
	/* (cap - 1) & (max - 1) + 1 is cap for 1..max, and tells the verifier so (max: a power of two) */
	if (cap > 0 && np_load_bytes(ctx, 0, e->data, ((cap - 1) & (NP_SAMPLE_MAX - 1)) + 1) == 0)
		e->cap_len = cap;
	np_events.ringbuf_submit(e, 0);
	return 0;
}

#endif
