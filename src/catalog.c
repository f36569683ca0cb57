/*
 * catalog.c
 *		Finds the extension's relations by name and caches their OIDs.
 *
 * The cache is dropped on every relcache invalidation of one of the cached
 * relations (or a global one), so DROP/CREATE EXTENSION is picked up.
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_subscription_rel.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#define ES_SCHEMA_NAME "eventsourced"

static EsCatalog cache;
static bool cache_valid = false;

/* Whether the events table is a logical replication target (-1: unknown) */
static int	events_subscribed = -1;
/* The same for the snapshots table (snapshot_changes, 0.5.0) */
static int	snapshots_subscribed = -1;

/* Whether relid is one of the cached relations (tables, indexes, sequence) */
static bool
es_catalog_has(Oid relid)
{
	const Oid	cached[] = {
		cache.events, cache.events_pkey, cache.events_position_key,
		cache.events_type_position_idx, cache.events_event_id_key, cache.position_seq, cache.snapshots,
		cache.snapshots_pkey, cache.snapshots_change_key, cache.projection_state, cache.projection_state_pkey,
		cache.protobuf_descriptors, cache.protobuf_descriptors_pkey,
		cache.entity_types, cache.entity_types_pkey, cache.commands, cache.commands_pkey,
		cache.entity_states, cache.entity_states_pkey, cache.snapshot_generations,
		cache.snapshot_generations_pkey, cache.command_results, cache.command_results_pkey,
		cache.fences, cache.fences_pkey
	};

	for (int i = 0; i < lengthof(cached); i++)
		if (cached[i] == relid)
			return true;
	return false;
}

/*
 * Forget the cached OIDs when one of our relations changes: DROP/CREATE
 * EXTENSION, REINDEX CONCURRENTLY (which gives an index a new OID), ALTER
 * TABLE.
 */
static void
es_catalog_invalidate(Datum arg, Oid relid)
{
	if (cache_valid && (relid == InvalidOid || es_catalog_has(relid)))
		cache_valid = false;
}

/* Forget whether the events table is subscribed when subscriptions change */
static void
es_subscription_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	events_subscribed = -1;
	snapshots_subscribed = -1;
}

/* Register the invalidation callbacks */
void
es_catalog_init(void)
{
	CacheRegisterRelcacheCallback(es_catalog_invalidate, (Datum) 0);
	CacheRegisterSyscacheCallback(SUBSCRIPTIONRELMAP, es_subscription_invalidate, (Datum) 0);
}

/* Whether a relation is the target of a logical replication subscription */
static bool
es_relation_subscribed(Oid relid)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	bool		found;

	rel = table_open(SubscriptionRelRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_subscription_rel_srrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, SubscriptionRelSrrelidSrsubidIndexId, true, NULL, 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * Whether the events table is the target of a logical replication
 * subscription in this database (cached until subscriptions change).
 */
bool
es_events_subscribed(void)
{
	if (events_subscribed < 0)
		events_subscribed = es_relation_subscribed(es_catalog()->events) ? 1 : 0;
	return events_subscribed == 1;
}

/*
 * Whether the snapshots table is the target of a logical replication
 * subscription in this database: its change numbers then arrive in the
 * publisher's commit order (cached until subscriptions change).
 */
bool
es_snapshots_subscribed(void)
{
	if (snapshots_subscribed < 0)
		snapshots_subscribed = es_relation_subscribed(es_catalog()->snapshots) ? 1 : 0;
	return snapshots_subscribed == 1;
}

/* Whether relid is one of the extension's own tables, indexes or sequence */
bool
es_is_catalog_relation(Oid relid)
{
	(void) es_catalog();
	return es_catalog_has(relid);
}

/* Look up one relation of ours, or fail with a hint to create the extension */
static Oid
es_lookup(Oid nsp, const char *relname)
{
	Oid			relid = get_relname_relid(relname, nsp);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.%s\" does not exist", ES_SCHEMA_NAME, relname),
				 errhint("Run CREATE EXTENSION eventsourced in this database.")));
	return relid;
}

/* Whether an index has a predicate (WHERE clause) */
static bool
es_index_is_partial(Oid indexid)
{
	HeapTuple	tuple = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexid));
	bool		partial;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for index %u", indexid);
	partial = !heap_attisnull(tuple, Anum_pg_index_indpred, NULL);
	ReleaseSysCache(tuple);
	return partial;
}

/* The OIDs of the extension's relations in the current database */
const EsCatalog *
es_catalog(void)
{
	Oid			nsp;

	if (cache_valid)
		return &cache;

	nsp = get_namespace_oid(ES_SCHEMA_NAME, true);
	if (!OidIsValid(nsp))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_SCHEMA),
				 errmsg("schema \"%s\" does not exist", ES_SCHEMA_NAME),
				 errhint("Run CREATE EXTENSION eventsourced in this database.")));

	cache.events = es_lookup(nsp, "events");
	cache.events_pkey = es_lookup(nsp, "events_pkey");
	cache.events_position_key = es_lookup(nsp, "events_position_key");
	/* the type feed's index came with 0.3.0; older stores scan by position */
	cache.events_type_position_idx = get_relname_relid("events_type_position_idx", nsp);
	cache.events_event_id_key = es_lookup(nsp, "events_event_id_key");
	cache.events_event_id_partial = es_index_is_partial(cache.events_event_id_key);
	cache.position_seq = es_lookup(nsp, "events_position_seq");
	cache.snapshots = es_lookup(nsp, "snapshots");
	cache.snapshots_pkey = es_lookup(nsp, "snapshots_pkey");
	/* snapshot changes came with 0.5.0 */
	cache.snapshots_change_key = get_relname_relid("snapshots_change_key", nsp);
	cache.projection_state = es_lookup(nsp, "projection_state");
	cache.projection_state_pkey = es_lookup(nsp, "projection_state_pkey");
	cache.protobuf_descriptors = es_lookup(nsp, "protobuf_descriptors");
	cache.protobuf_descriptors_pkey = es_lookup(nsp, "protobuf_descriptors_pkey");
	cache.entity_types = es_lookup(nsp, "entity_types");
	cache.entity_types_pkey = es_lookup(nsp, "entity_types_pkey");
	cache.commands = es_lookup(nsp, "commands");
	cache.commands_pkey = es_lookup(nsp, "commands_pkey");
	cache.entity_states = es_lookup(nsp, "entity_states");
	cache.entity_states_pkey = es_lookup(nsp, "entity_states_pkey");
	cache.snapshot_generations = es_lookup(nsp, "snapshot_generations");
	cache.snapshot_generations_pkey = es_lookup(nsp, "snapshot_generations_pkey");
	/* the results of commands sent with an id came with 0.4.0 */
	cache.command_results = get_relname_relid("command_results", nsp);
	cache.command_results_pkey = get_relname_relid("command_results_pkey", nsp);
	/* fences of partitions moved to other servers came with 0.5.0 */
	cache.fences = get_relname_relid("fences", nsp);
	cache.fences_pkey = get_relname_relid("fences_pkey", nsp);
	cache_valid = true;
	return &cache;
}

/* The column types of eventsourced.events, in order */
const Oid	es_events_types[Natts_es_events] = {
	TEXTOID, TEXTOID, INT8OID, INT8OID, TEXTOID, JSONBOID, JSONBOID, UUIDOID,
	TIMESTAMPTZOID, BYTEAOID
};

/*
 * Whether a row type of ours (a table's, or a composite type's) has natts
 * columns (of these types, when given): fixed-size arrays and
 * attribute numbers are sized for them.  DDL that would change them is
 * refused (see ddl.c); this catches a type changed with that guard
 * disabled, or a table left at an older version.
 */
static bool
es_tupdesc_matches(TupleDesc desc, int natts, const Oid *types)
{
	bool		ok = (desc->natts == natts);

	for (int i = 0; ok && types != NULL && i < natts; i++)
		ok = !TupleDescAttr(desc, i)->attisdropped && TupleDescAttr(desc, i)->atttypid == types[i];
	return ok;
}

/* Refuse a row type that es_tupdesc_matches does not accept, naming it */
void
es_check_tupdesc(TupleDesc desc, const char *name, int natts, const Oid *types)
{
	if (es_tupdesc_matches(desc, natts, types))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("%s does not have the columns this version of eventsourced expects", name),
			 errdetail("It has %d columns; this version uses %d, of its own types.", desc->natts, natts),
			 errhint("Run ALTER EXTENSION eventsourced UPDATE, or undo the change.")));
}

/*
 * es_check_tupdesc for one of our tables, read or written directly (the
 * name is formatted only for the error: this runs on every write)
 */
void
es_check_shape(Relation rel, int natts, const Oid *types)
{
	if (es_tupdesc_matches(RelationGetDescr(rel), natts, types))
		return;
	es_check_tupdesc(RelationGetDescr(rel),
					 psprintf("table %s", RelationGetRelationName(rel)), natts, types);
}

/* Readers that scan our tables directly still honour the table's SELECT grant */
void
es_check_select(Oid relid)
{
	AclResult	result = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);

	if (result != ACLCHECK_OK)
		aclcheck_error(result, OBJECT_TABLE, get_rel_name(relid));
}

/* The same check for another role, whose rights some work will run with */
void
es_check_select_by(Oid relid, Oid role)
{
	const char *name;

	if (role == GetUserId())
	{
		es_check_select(relid);
		return;
	}
	if (pg_class_aclcheck(relid, role, ACL_SELECT) == ACLCHECK_OK)
		return;
	name = GetUserNameFromId(role, true);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" may not read table %s", name ? name : "?", get_rel_name(relid)),
			 errdetail("Projection handlers run as their function's owner, who must have SELECT on it.")));
}

/* The owner of one of our relations: internal work on it runs as that role */
Oid
es_relation_owner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}
