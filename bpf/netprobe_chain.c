/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Chain plumbing, part 2: the program entry, included after a probe's source.
 * A "continue" verdict tail-calls the successor through a constant slot, so
 * the JIT emits a direct jump. When there is no successor the tail call falls
 * through and the packet passes. Whatever ends the chain clears the metadata.
 */
static __always_inline void np_meta_clear(void)
{
#ifdef NP_USES_META
	int zero = 0;
	struct np_meta *m = np_meta_store.lookup(&zero);
	if (m)
		__builtin_memset(m, 0, sizeof(*m));
#endif
}

int np_entry(np_ctx_t *ctx)
{
	int verdict = np_probe_handler(ctx);

	if (verdict == NP_PASS)
		np_chain.call(ctx, NP_SLOT);
	np_meta_clear();
	return verdict;
}
