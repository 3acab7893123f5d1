/* trace_tcp: TCP state changes (connect, accept, close) from the raw tracepoint
 * sock:inet_sock_set_state. The owner (pid, comm) of a socket is remembered when it
 * first changes state in process context (connect), since later changes happen in
 * softirq context on whatever task runs. */

struct npg_tcp_event {
    __u64 ts_ns;
    __u64 skaddr;
    __u32 pid;
    __u32 netns;
    __u16 family;
    __u16 sport;
    __u16 dport;
    __u8 oldstate;
    __u8 newstate;
    __u8 saddr[16];
    __u8 daddr[16];
    char comm[16];
};

struct npg_owner {
    __u32 pid;
    char comm[16];
};

BPF_TABLE("lru_hash", u64, struct npg_owner, npg_owners, 16384);

#define TCP_SYN_SENT_STATE 2
#define TCP_CLOSE_STATE 7

int npg_trace_tcp(struct bpf_raw_tracepoint_args *ctx)
{
    struct npg_config *c = npg_config();
    struct npg_tcp_event e = {};
    struct npg_sock s = {};
    const char *sk = (const char *)ctx->args[NPG_ARG_SK];
    u64 key = (u64)sk;
    if (!c || npg_read_sock(sk, &s) < 0)
        return 0;
    e.oldstate = ctx->args[NPG_ARG_OLDSTATE];
    e.newstate = ctx->args[NPG_ARG_NEWSTATE];
    struct npg_owner *owner = npg_owners.lookup(&key);
    if (e.newstate == TCP_SYN_SENT_STATE) {
        struct npg_owner o = {};
        o.pid = bpf_get_current_pid_tgid() >> 32;
        bpf_get_current_comm(&o.comm, sizeof(o.comm));
        npg_owners.update(&key, &o);
        e.pid = o.pid;
        __builtin_memcpy(e.comm, o.comm, sizeof(e.comm));
    } else if (owner) {
        e.pid = owner->pid;
        __builtin_memcpy(e.comm, owner->comm, sizeof(e.comm));
    }
    if (e.newstate == TCP_CLOSE_STATE)
        npg_owners.delete(&key);
    e.netns = s.netns;
    e.family = s.family;
    e.sport = s.sport;
    e.dport = s.dport;
    __u64 *v = npg_values();
    if (!v)
        return 0;
    npg_set(v, NPG_F_NETNS_ID, e.netns);
    npg_set(v, NPG_F_SPORT, e.sport);
    npg_set(v, NPG_F_DPORT, e.dport);
    npg_set(v, NPG_F_PID, e.pid);
    if (!npg_pass(c, v))
        return 0;
    __builtin_memcpy(e.saddr, s.saddr, 16);
    __builtin_memcpy(e.daddr, s.daddr, 16);
    e.skaddr = key;
    e.ts_ns = bpf_ktime_get_ns();
    npg_emit(&e, sizeof(e));
    return 0;
}
