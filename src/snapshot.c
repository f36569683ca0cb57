/*
 * snapshot.c
 *		The snapshot store: the newest state of an entity at a seq_no.
 *
 * One row per entity; saving replaces an older snapshot and never a newer
 * one.  Writes run as the owner of the snapshots table, so callers need
 * only EXECUTE on save_snapshot().
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

static const char *const save_sql =
"INSERT INTO eventsourced.snapshots AS s (entity_type, entity_id, seq_no, state) "
"VALUES ($1, $2, $3, $4) "
"ON CONFLICT (entity_type, entity_id) DO UPDATE "
"SET seq_no = excluded.seq_no, state = excluded.state, recorded_at = pg_catalog.now() "
"WHERE s.seq_no OPERATOR(pg_catalog.<=) excluded.seq_no";

static SPIPlanPtr save_plan = NULL;

/* The snapshot's seq_no must name an event the entity has */
static void
es_check_snapshot_seq_no(const EsEntity *entity, int64 seq_no)
{
	const EsCatalog *cat = es_catalog();
	Relation	events;
	Relation	pkey;
	int64		last;

	if (seq_no < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("snapshot seq_no must be at least 1"),
				 errdetail("seq_no was " INT64_FORMAT ".", seq_no)));
	events = table_open(cat->events, AccessShareLock);
	pkey = index_open(cat->events_pkey, AccessShareLock);
	last = es_last_seq_no(events, pkey, entity);
	index_close(pkey, AccessShareLock);
	table_close(events, AccessShareLock);
	if (seq_no > last)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("snapshot seq_no " INT64_FORMAT " is beyond the last event of entity %s",
						seq_no, es_entity_string(entity)),
				 errdetail("The entity's last seq_no is " INT64_FORMAT ".", last),
				 errhint("Save a snapshot only of state built from appended events.")));
}

/* Store a snapshot, as the table owner, through a cached plan */
void
es_save_snapshot(const EsEntity *entity, int64 seq_no, Datum state)
{
	const EsCatalog *cat = es_catalog();
	Oid			save_userid;
	int			save_sec;
	Datum		values[4];
	Relation	rel;
	Oid			owner;

	es_check_snapshot_seq_no(entity, seq_no);
	rel = table_open(cat->snapshots, RowExclusiveLock);
	owner = rel->rd_rel->relowner;
	table_close(rel, NoLock);

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (save_plan == NULL)
	{
		Oid			types[4] = {TEXTOID, TEXTOID, INT8OID, JSONBOID};
		SPIPlanPtr	plan = SPI_prepare(save_sql, 4, types);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_prepare failed for snapshot insert: %s",
				 SPI_result_code_string(SPI_result));
		save_plan = plan;
	}
	values[0] = PointerGetDatum(entity->type);
	values[1] = PointerGetDatum(entity->id);
	values[2] = Int64GetDatum(seq_no);
	values[3] = state;
	if (SPI_execute_plan(save_plan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "snapshot insert failed");
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);
}

/*
 * The entity's snapshot, visible to the current snapshot: returns false
 * when there is none.
 */
bool
es_load_snapshot(const EsEntity *entity, int64 *seq_no, Datum *state)
{
	const EsCatalog *cat = es_catalog();
	Relation	rel = table_open(cat->snapshots, AccessShareLock);
	Relation	index = index_open(cat->snapshots_pkey, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	ScanKeyData keys[2];
	IndexScanDesc scan;
	bool		found;

	es_entity_scankeys(keys, entity);
	scan = index_beginscan(rel, index, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	if (found)
	{
		bool		isnull;

		*seq_no = DatumGetInt64(slot_getattr(slot, Anum_es_snapshots_seq_no, &isnull));
		*state = PointerGetDatum(PG_DETOAST_DATUM_COPY(slot_getattr(slot, Anum_es_snapshots_state, &isnull)));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);
	return found;
}

PG_FUNCTION_INFO_V1(eventsourced_save_snapshot);

/* save_snapshot(entity_type, entity_id, seq_no, state) */
Datum
eventsourced_save_snapshot(PG_FUNCTION_ARGS)
{
	EsEntity	entity = es_entity_arg(fcinfo, 0, 1);

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("seq_no must not be null")));
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("state must not be null"),
				 errhint("Use 'null'::jsonb for an empty state.")));
	PreventCommandIfReadOnly("eventsourced.save_snapshot()");
	es_save_snapshot(&entity, PG_GETARG_INT64(2), PG_GETARG_DATUM(3));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(eventsourced_load_snapshot);

/* load_snapshot(entity_type, entity_id): zero or one row (seq_no, state) */
Datum
eventsourced_load_snapshot(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EsEntity	entity = es_entity_arg(fcinfo, 0, 1);
	int64		seq_no;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	InitMaterializedSRF(fcinfo, 0);
	es_check_select(es_catalog()->snapshots);
	if (es_load_snapshot(&entity, &seq_no, &values[1]))
	{
		values[0] = Int64GetDatum(seq_no);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
