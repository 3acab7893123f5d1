/* profile_tcprtt: a log2 histogram of smoothed TCP round-trip times (tcp_sock.srtt_us),
 * sampled on every established-state segment received (raw tracepoint tcp:tcp_probe).
 * With param[0] set, one histogram per remote address. */

struct npg_rtt_key {
    __u8 addr[16];
    __u8 family;
    __u8 slot;   /* log2 bucket of microseconds; 255: running sum of microseconds */
    __u16 _pad;
};

BPF_HASH(npg_rtt, struct npg_rtt_key, u64, 4096);

static __always_inline __u8 npg_log2(__u64 v)
{
    __u8 r = 0;
#pragma unroll
    for (int i = 0; i < 40; i++) {
        if (v <= 1)
            break;
        v >>= 1;
        r++;
    }
    return r;
}

static __always_inline void npg_rtt_add(struct npg_rtt_key *k, __u64 n)
{
    u64 *v = npg_rtt.lookup(k);
    if (v) {
        __sync_fetch_and_add(v, n);
        return;
    }
    if (npg_rtt.update(k, &n) != 0)
        npg_count_lost();
}

int npg_profile_tcprtt(struct bpf_raw_tracepoint_args *ctx)
{
    struct npg_config *c = npg_config();
    struct npg_sock s = {};
    struct npg_rtt_key k = {};
    const char *sk = (const char *)ctx->args[NPG_ARG_SK];
    __u32 srtt = 0;
    if (!c || npg_read_sock(sk, &s) < 0)
        return 0;
    __u64 *v = npg_values();
    if (!v)
        return 0;
    npg_set(v, NPG_F_NETNS_ID, s.netns);
    npg_set(v, NPG_F_SPORT, s.sport);
    npg_set(v, NPG_F_DPORT, s.dport);
    if (!npg_pass(c, v))
        return 0;
    bpf_probe_read_kernel(&srtt, 4, sk + NPG_OFF_TCP_SRTT);
    __u64 us = srtt >> 3;
    if (c->param[0]) {
        __builtin_memcpy(k.addr, s.daddr, 16);
        k.family = s.family;
    }
    k.slot = npg_log2(us);
    npg_rtt_add(&k, 1);
    k.slot = 255;
    npg_rtt_add(&k, us);
    return 0;
}
