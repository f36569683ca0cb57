/*
 * snapshot.c
 *		The snapshot store: the newest state of an entity at a seq_no.
 *
 * One row per entity; saving replaces an older snapshot and never a newer
 * one.  The state is JSON (column state) or bytes (column state_bytes).
 * Writes run as the owner of the snapshots table, so callers need only
 * EXECUTE on save_snapshot().
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
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

static EsStatement save_snapshot = {
	"INSERT INTO eventsourced.snapshots AS s (entity_type, entity_id, seq_no, state, state_bytes) "
	"VALUES ($1, $2, $3, $4, $5) "
	"ON CONFLICT (entity_type, entity_id) DO UPDATE "
	"SET seq_no = excluded.seq_no, state = excluded.state, state_bytes = excluded.state_bytes, "
	"recorded_at = pg_catalog.now() "
	"WHERE s.seq_no OPERATOR(pg_catalog.<=) excluded.seq_no",
	5, {TEXTOID, TEXTOID, INT8OID, JSONBOID, BYTEAOID}
};

/* handle_command's claim on the entity's snapshot (see eventsourced_save_snapshot) */
static EsStatement forget_command_snapshot = {
	"DELETE FROM eventsourced.snapshot_generations "
	"WHERE entity_type OPERATOR(pg_catalog.=) $1 COLLATE pg_catalog.\"C\" "
	"AND entity_id OPERATOR(pg_catalog.=) $2 COLLATE pg_catalog.\"C\"",
	2, {TEXTOID, TEXTOID}
};

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

/*
 * Store a JSON (binary false) or binary state, as the snapshots table's
 * owner; whether it was stored (an older snapshot than the one kept is not).
 */
static bool
es_store_snapshot(const EsEntity *entity, int64 seq_no, Datum state, bool binary)
{
	Datum		values[5];
	bool		nulls[5] = {false, false, false, binary, !binary};

	es_check_snapshot_seq_no(entity, seq_no);
	values[0] = PointerGetDatum(entity->type);
	values[1] = PointerGetDatum(entity->id);
	values[2] = Int64GetDatum(seq_no);
	values[3] = binary ? (Datum) 0 : state;
	values[4] = binary ? state : (Datum) 0;
	return es_exec_as_owner(es_catalog()->snapshots, &save_snapshot, values, nulls) > 0;
}

/* Store a JSON snapshot (for handle_command) */
void
es_save_snapshot(const EsEntity *entity, int64 seq_no, Datum state)
{
	(void) es_store_snapshot(entity, seq_no, state, false);
}

/*
 * The entity's snapshot row, visible to the current snapshot; false when
 * there is none.  *binary tells which of the two state columns it holds.
 */
bool
es_fetch_snapshot(const EsEntity *entity, int64 *seq_no, Datum *state, bool *binary)
{
	const EsCatalog *cat = es_catalog();
	ScanKeyData keys[2];
	Datum		values[Natts_es_snapshots];
	bool		nulls[Natts_es_snapshots];

	es_entity_scankeys(keys, entity);
	if (!es_fetch_by_key(cat->snapshots, cat->snapshots_pkey, keys, 2, Natts_es_snapshots,
						 values, nulls, NULL))
		return false;
	*seq_no = DatumGetInt64(values[Anum_es_snapshots_seq_no - 1]);
	*binary = nulls[Anum_es_snapshots_state - 1];
	*state = *binary ? values[Anum_es_snapshots_state_bytes - 1]
		: values[Anum_es_snapshots_state - 1];
	return true;
}

/* The snapshot row as a plain query by the caller sees it (row-level security) */
static const char *const snapshot_policy_sql =
"SELECT s.seq_no, s.state, s.state_bytes FROM eventsourced.snapshots s "
"WHERE s.entity_type OPERATOR(pg_catalog.=) $1 COLLATE pg_catalog.\"C\" "
"AND s.entity_id OPERATOR(pg_catalog.=) $2 COLLATE pg_catalog.\"C\"";

/*
 * es_fetch_snapshot for a caller that row-level security policies on the
 * snapshots table apply to: the row a plain SELECT by it would see, or none.
 */
static bool
es_fetch_snapshot_policies(const EsEntity *entity, int64 *seq_no, Datum *state, bool *binary)
{
	static const Oid argtypes[2] = {TEXTOID, TEXTOID};
	MemoryContext caller_cxt = CurrentMemoryContext;
	Datum		args[2] = {PointerGetDatum(entity->type), PointerGetDatum(entity->id)};
	bool		found;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(snapshot_policy_sql, 2, (Oid *) argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "snapshot query failed");
	found = (SPI_processed == 1);
	if (found)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old;

		*seq_no = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		*state = SPI_getbinval(tup, desc, 2, binary);
		if (*binary)
			*state = SPI_getbinval(tup, desc, 3, &isnull);
		old = MemoryContextSwitchTo(caller_cxt);
		*state = PointerGetDatum(PG_DETOAST_DATUM_COPY(*state));
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return found;
}

/* The entity's snapshot row as the caller may read it: policies honoured */
bool
es_fetch_snapshot_as_caller(const EsEntity *entity, int64 *seq_no, Datum *state, bool *binary)
{
	es_check_select(es_catalog()->snapshots);
	if (check_enable_rls(es_catalog()->snapshots, InvalidOid, false) == RLS_ENABLED)
		return es_fetch_snapshot_policies(entity, seq_no, state, binary);
	return es_fetch_snapshot(entity, seq_no, state, binary);
}

/* The entity's JSON snapshot; false when there is none or it is binary */
bool
es_load_snapshot(const EsEntity *entity, int64 *seq_no, Datum *state)
{
	bool		binary;

	return es_fetch_snapshot(entity, seq_no, state, &binary) && !binary;
}

PG_FUNCTION_INFO_V1(eventsourced_save_snapshot);

/*
 * save_snapshot(entity_type, entity_id, seq_no, state).  A snapshot saved
 * by hand replaces the one handle_command saved, so the command's claim on
 * it goes: commands never fold from state they did not build.
 */
Datum
eventsourced_save_snapshot(PG_FUNCTION_ARGS)
{
	EsEntity	entity = es_entity_arg(fcinfo, 0, 1);
	Datum		key[2];

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
	if (!es_store_snapshot(&entity, PG_GETARG_INT64(2), PG_GETARG_DATUM(3),
						   get_fn_expr_argtype(fcinfo->flinfo, 3) == BYTEAOID))
		PG_RETURN_VOID();
	key[0] = PointerGetDatum(entity.type);
	key[1] = PointerGetDatum(entity.id);
	(void) es_exec_as_owner(es_catalog()->snapshot_generations, &forget_command_snapshot,
							key, NULL);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(eventsourced_load_snapshot);

/*
 * load_snapshot(entity_type, entity_id) and load_snapshot_bytes(...): zero
 * or one row (seq_no, state); each returns only snapshots of its own kind.
 */
Datum
eventsourced_load_snapshot(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EsEntity	entity = es_entity_arg(fcinfo, 0, 1);
	bool		want_binary = (TupleDescAttr(rsinfo->expectedDesc, 1)->atttypid == BYTEAOID);
	bool		binary;
	int64		seq_no;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	InitMaterializedSRF(fcinfo, 0);
	if (es_fetch_snapshot_as_caller(&entity, &seq_no, &values[1], &binary) && binary == want_binary)
	{
		values[0] = Int64GetDatum(seq_no);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
