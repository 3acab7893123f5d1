/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rate_limiter: a token bucket, one per source address or one for all
 * traffic. Tokens are counted in nano-units (one packet or byte = 1e9) so the
 * refill, elapsed ns x rate, needs no division on the packet path.
 *
 * Settings live in two banks and the engine flips `active` after writing the
 * idle one. Non-IP packets pass. See docs/probes/rate_limiter.md.
 */
#include "netprobe.h"

#define RL_MAX_SOURCES 65536
#define RL_UNIT 1000000000ULL

struct rl_settings {
	__u64 rate;        /* tokens per second; 0: no limit */
	__u64 capacity;    /* burst x RL_UNIT */
	__u64 fill_ns;     /* time to fill an empty bucket: beyond it, the bucket is full */
	__u32 per_source;
	__u32 bytes;       /* 1: a packet costs its length, 0: one token */
};

struct rl_bucket {
	__u64 tokens;
	__u64 last_ns;
};

struct rl_verdicts {
	__u64 passed;
	__u64 dropped;
};

BPF_ARRAY(settings, struct rl_settings, 2);
BPF_ARRAY(active, __u32, 1);
NP_CONFIG(settings);
NP_CONFIG(active);

BPF_TABLE("lru_hash", struct np_addr, struct rl_bucket, buckets, RL_MAX_SOURCES);
BPF_ARRAY(global_bucket, struct rl_bucket, 1);

BPF_PERCPU_ARRAY(verdicts, struct rl_verdicts, 1);
NP_METRIC(verdicts, NP_EXPORT | NP_COUNTER);

/* Take cost tokens from b after refilling it; 1 when there were enough. */
static __always_inline int rl_take(struct rl_bucket *b, struct rl_settings *s, __u64 cost, __u64 now)
{
	/* another CPU may have stamped the bucket a little later than our now */
	__u64 elapsed = now > b->last_ns ? now - b->last_ns : 0;
	__u64 tokens;

	if (elapsed >= s->fill_ns)
		tokens = s->capacity;
	else
		tokens = b->tokens + elapsed * s->rate;
	if (tokens > s->capacity)
		tokens = s->capacity;
	if (elapsed)
		b->last_ns = now;
	if (tokens < cost) {
		b->tokens = tokens;
		return 0;
	}
	b->tokens = tokens - cost;
	return 1;
}

NP_PROBE(ctx)
{
	struct np_packet pkt;
	struct rl_settings *s;
	struct rl_bucket *b;
	struct rl_verdicts *v;
	struct np_addr src;
	__u32 zero = 0, which;
	__u32 *act;
	__u64 now, cost;
	int ok;

	if (np_parse(ctx, &pkt) < 0 || np_addr_of(&pkt, 0, &src) < 0)
		return NP_PASS;
	act = active.lookup(&zero);
	which = act ? (*act & 1) : 0;
	s = settings.lookup(&which);
	if (!s || !s->rate)
		return NP_PASS;

	now = bpf_ktime_get_ns();
	cost = s->bytes ? (__u64)pkt.len * RL_UNIT : RL_UNIT;
	if (s->per_source) {
		b = buckets.lookup(&src);
		if (!b) {
			struct rl_bucket full = {.tokens = s->capacity, .last_ns = now};

			buckets.update(&src, &full);
			b = buckets.lookup(&src);
		}
	} else {
		b = global_bucket.lookup(&zero);
	}
	ok = b ? rl_take(b, s, cost, now) : 1;

	v = verdicts.lookup(&zero);
	if (v) {
		if (ok)
			v->passed += 1;
		else
			v->dropped += 1;
	}
	return ok ? NP_PASS : NP_DROP;
}
