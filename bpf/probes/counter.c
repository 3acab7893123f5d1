/* SPDX-License-Identifier: GPL-2.0 */
/* counter: packets and bytes per L3/L4 protocol, per CPU. Always passes. */
#include "netprobe.h"

struct proto_key {
	__u16 l3_proto;
	__u8 l4_proto;
	__u8 __pad;
};

struct traffic {
	__u64 packets;
	__u64 bytes;
};

BPF_PERCPU_HASH(by_proto, struct proto_key, struct traffic, 256);
NP_METRIC(by_proto, NP_EXPORT | NP_COUNTER);

NP_PROBE(ctx)
{
	struct np_packet pkt;
	struct proto_key key = {};
	struct traffic zero = {};
	struct traffic *t;

	np_parse(ctx, &pkt);
	key.l3_proto = pkt.l3_proto;
	key.l4_proto = pkt.l4_proto;
	t = by_proto.lookup_or_try_init(&key, &zero);
	if (t) {
		t->packets += 1;
		t->bytes += pkt.len;
	}
	return NP_PASS;
}
