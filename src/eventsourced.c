/*
 * eventsourced.c
 *		Module entry point: hands off to each subsystem's init function, and
 *		tells them about dropped databases.
 */
#include "eventsourced.h"

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static object_access_hook_type prev_object_access_hook = NULL;
static Oid	dropped_database = InvalidOid;	/* by this transaction */

/*
 * DROP DATABASE: note the database; shared state keyed by its OID is
 * forgotten when the drop commits (the hook runs before the drop's own
 * checks, and by commit no backend of the database is left).
 */
static void
es_object_access(ObjectAccessType access, Oid classId, Oid objectId,
				 int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access == OAT_DROP && classId == DatabaseRelationId)
		dropped_database = objectId;
}

/* Tell the subsystems about a database whose drop committed */
static void
es_drop_xact_callback(XactEvent event, void *arg)
{
	if (!OidIsValid(dropped_database))
		return;
	if (event == XACT_EVENT_COMMIT)
	{
		es_position_database_dropped(dropped_database);
		es_seqcache_database_dropped(dropped_database);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		dropped_database = InvalidOid;
}

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
	if (process_shared_preload_libraries_in_progress)
	{
		prev_object_access_hook = object_access_hook;
		object_access_hook = es_object_access;
		RegisterXactCallback(es_drop_xact_callback, NULL);
	}
	MarkGUCPrefixReserved("eventsourced");
}
