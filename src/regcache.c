/*
 * regcache.c
 *		The backend's cache of entity type and command registrations, so a
 *		command reads no registration table.
 *
 * An entry is built from the registration tables with a snapshot taken
 * after they were locked, i.e. after pending invalidations were processed.
 * Every statement that writes a registration table fires a trigger that
 * sends a relcache invalidation for it at commit (and locally at once), and
 * a change to any function, schema or type invalidates the resolved handler
 * OIDs; either empties the cache.  An entry built while an invalidation
 * arrived is not kept.  EXECUTE on the handler is checked on every use, for
 * the current user.
 */
#include "eventsourced.h"

#include "access/table.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/* An entity type (is_command false) or one of its commands */
typedef struct EsRegKey
{
	bool		is_command;
	char		type[ES_MAX_TYPE_LEN + 1];
	char		command[ES_MAX_TYPE_LEN + 1];
} EsRegKey;

typedef struct EsRegEntry
{
	EsRegKey	key;
	EsHandler	handler;		/* the command handler, or the event handler */
	EsEntityType reg;			/* entity types only; initial_state in reg_cxt */
} EsRegEntry;

static HTAB *reg_cache = NULL;
static MemoryContext reg_cxt = NULL;
static bool reg_stale = false;
static uint64 reg_invals = 0;	/* invalidations received so far */

/* Any invalidation that may concern registrations empties the cache */
static void
es_regcache_invalidate(void)
{
	reg_stale = true;
	reg_invals++;
}

/* Relcache callback: a registration table (or every relation) changed */
static void
es_regcache_relcache_callback(Datum arg, Oid relid)
{
	es_regcache_invalidate();
}

/* Syscache callback: a function, schema or type changed */
static void
es_regcache_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	es_regcache_invalidate();
}

/* The cache, created on first use and emptied when stale */
static HTAB *
es_regcache(void)
{
	HASHCTL		ctl;

	if (reg_cache != NULL && !reg_stale)
		return reg_cache;
	if (reg_cache == NULL)
	{
		reg_cxt = AllocSetContextCreate(CacheMemoryContext, "eventsourced registrations",
										ALLOCSET_SMALL_SIZES);
		CacheRegisterRelcacheCallback(es_regcache_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, es_regcache_syscache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, es_regcache_syscache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(TYPEOID, es_regcache_syscache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, es_regcache_syscache_callback, (Datum) 0);
	}
	else
	{
		hash_destroy(reg_cache);
		MemoryContextReset(reg_cxt);
	}
	ctl.keysize = sizeof(EsRegKey);
	ctl.entrysize = sizeof(EsRegEntry);
	ctl.hcxt = reg_cxt;
	reg_cache = hash_create("eventsourced registrations", 16, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	reg_stale = false;
	return reg_cache;
}

/* A zero-padded key, so that it hashes as a blob */
static void
es_regcache_key(EsRegKey *key, text *type, text *command)
{
	memset(key, 0, sizeof(EsRegKey));
	key->is_command = (command != NULL);
	text_to_cstring_buffer(type, key->type, sizeof(key->type));
	if (command)
		text_to_cstring_buffer(command, key->command, sizeof(key->command));
}

/*
 * What every use of a registered handler checks: it may still run as its
 * function's owner, and its registrant and that owner may still read every
 * event.
 */
static void
es_regcache_check_use(const EsHandler *h)
{
	es_check_run_as(h->fn, h->registrant, h->run_as.owner, h->handler_owner);
	es_check_reads_all_events(h->registrant);
	if (h->run_as.owner != h->registrant)
		es_check_reads_all_events(h->run_as.owner);
	es_check_execute(h->fn, h->run_as.owner);
}

/* A handler copied into cxt (its search_path string with it) */
static void
es_regcache_copy_handler(EsHandler *dst, const EsHandler *src, MemoryContext cxt)
{
	*dst = *src;
	dst->run_as.search_path = MemoryContextStrdup(cxt, src->run_as.search_path);
}

/*
 * Read a registration from its table: lock the table first, so pending
 * invalidations are processed, then read with a new snapshot.  Returns
 * whether no invalidation arrived meanwhile, i.e. the result may be kept.
 */
static bool
es_regcache_read(Oid relid, text *type, text *command, EsRegEntry *out)
{
	Relation	rel = table_open(relid, AccessShareLock);
	uint64		invals;

	(void) es_regcache();
	invals = reg_invals;
	PushActiveSnapshot(GetLatestSnapshot());
	if (command)
		es_lookup_command(type, command, &out->handler);
	else
	{
		es_lookup_entity_type(type, &out->reg);
		out->handler = out->reg.event_handler;
	}
	PopActiveSnapshot();
	table_close(rel, AccessShareLock);
	return invals == reg_invals;
}

/*
 * The registration of an entity type (cached), in the caller's memory (the
 * cache may be emptied meanwhile); its handler's owner must still hold
 * EXECUTE on it.
 */
void
es_cached_entity_type(text *type, EsEntityType *reg)
{
	EsRegKey	key;
	EsRegEntry *e;
	EsRegEntry	fresh;
	MemoryContext old;

	es_regcache_key(&key, type, NULL);
	e = hash_search(es_regcache(), &key, HASH_FIND, NULL);
	if (e == NULL)
	{
		if (!es_regcache_read(es_catalog()->entity_types, type, NULL, &fresh))
		{
			*reg = fresh.reg;
			es_regcache_check_use(&reg->event_handler);
			return;
		}
		e = hash_search(es_regcache(), &key, HASH_ENTER, NULL);
		e->reg = fresh.reg;
		es_regcache_copy_handler(&e->reg.event_handler, &fresh.reg.event_handler, reg_cxt);
		old = MemoryContextSwitchTo(reg_cxt);
		e->reg.initial_state = datumCopy(fresh.reg.initial_state, false, -1);
		MemoryContextSwitchTo(old);
	}
	*reg = e->reg;
	es_regcache_copy_handler(&reg->event_handler, &e->reg.event_handler, CurrentMemoryContext);
	reg->initial_state = datumCopy(e->reg.initial_state, false, -1);
	es_regcache_check_use(&reg->event_handler);
}

/*
 * The command handler registered for (type, command) (cached), in the
 * caller's memory; the caller and the handler's owner must hold EXECUTE on
 * it.
 */
void
es_cached_command(text *type, text *command, EsHandler *h)
{
	EsRegKey	key;
	EsRegEntry *e;
	EsRegEntry	fresh;

	es_regcache_key(&key, type, command);
	e = hash_search(es_regcache(), &key, HASH_FIND, NULL);
	if (e != NULL)
		es_regcache_copy_handler(h, &e->handler, CurrentMemoryContext);
	else
	{
		if (es_regcache_read(es_catalog()->commands, type, command, &fresh))
		{
			e = hash_search(es_regcache(), &key, HASH_ENTER, NULL);
			es_regcache_copy_handler(&e->handler, &fresh.handler, reg_cxt);
		}
		*h = fresh.handler;
	}
	es_check_execute(h->fn, GetUserId());
	es_regcache_check_use(h);
}

PG_FUNCTION_INFO_V1(eventsourced_registry_changed);

/* Statement trigger on a registration table: every backend's cache must go */
Datum
eventsourced_registry_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("eventsourced.registry_changed() must be called as a trigger")));
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}
