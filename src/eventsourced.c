/*
 * eventsourced.c
 *		Module entry point: hands off to each subsystem's init function.
 */
#include "eventsourced.h"

#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Set up every subsystem once per backend */
void
_PG_init(void)
{
	es_catalog_init();
	es_seqcache_init();
	es_feed_init();
	es_position_init();
	es_notify_init();
	es_projection_init();
	es_worker_init();
	es_protoreg_init();
	es_dbwatch_init();
	es_fence_init();
	MarkGUCPrefixReserved("eventsourced");
}
