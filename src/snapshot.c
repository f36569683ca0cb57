/*
 * snapshot.c
 *		The snapshot store: the newest state of an entity at a seq_no.
 *
 * One row per entity; saving replaces an older snapshot and never a newer
 * one.  The state is JSON (column state) or bytes (column state_bytes).
 * Writes go directly into the table and its indexes (write.c), as the
 * events do, under the entity lock that every writer of a snapshot row
 * holds; callers need only EXECUTE on save_snapshot().  From 0.5.0 on,
 * each write draws a change number from the event positions (feed.c), so
 * that snapshot_changes() can follow them without skipping one
 * (snapchanges.c); a snapshot not written (a newer one is kept) draws none.
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/xact.h"
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

/*
 * The column types of eventsourced.snapshots, which is written directly;
 * before 0.5.0 the table has the first Natts_es_snapshots_v040 of them.
 */
static const Oid es_snapshots_types[Natts_es_snapshots] = {
	TEXTOID, TEXTOID, INT8OID, JSONBOID, TIMESTAMPTZOID, BYTEAOID, INT8OID
};

/* How many columns the snapshots table has in this database's version */
int
es_snapshots_natts(void)
{
	return OidIsValid(es_catalog()->snapshots_change_key) ? Natts_es_snapshots
		: Natts_es_snapshots_v040;
}

/* The column types of eventsourced.snapshot_generations */
static const Oid es_snapshot_generations_types[Natts_es_snapshot_generations] = {
	TEXTOID, TEXTOID, INT8OID, INT8OID
};

/*
 * Open a table keyed by entity for writing (its shape checked) and find the
 * entity's row in it: NULL when there is none.
 */
static TupleTableSlot *
es_open_entity_row(EsTableWriter *w, Oid relid, Oid pkey, int natts, const Oid *types,
				   const EsEntity *entity)
{
	ScanKeyData keys[2];

	es_table_open(w, relid, InvalidOid);
	es_check_shape(w->rel, natts, types);
	es_entity_scankeys(keys, entity);
	return es_table_find(w, pkey, keys, 2);
}

/*
 * Write the entity's snapshot, unless the one kept is newer; whether it was
 * written.  Every writer of a snapshot row holds the entity lock
 * (handle_command, save_snapshot), so the row found stays the current one:
 * a direct write needs none of INSERT ... ON CONFLICT's waiting and
 * retrying.
 */
static bool
es_write_snapshot(const EsEntity *entity, int64 seq_no, Datum state, bool binary)
{
	const EsCatalog *cat = es_catalog();
	EsTableWriter w;
	TupleTableSlot *old;
	TupleTableSlot *slot;
	bool		isnull;
	bool		newer;

	if (!binary)
		es_check_state_text(state);
	old = es_open_entity_row(&w, cat->snapshots, cat->snapshots_pkey, es_snapshots_natts(),
							 es_snapshots_types, entity);
	newer = old != NULL &&
		DatumGetInt64(slot_getattr(old, Anum_es_snapshots_seq_no, &isnull)) > seq_no;
	if (!newer)
	{
		slot = es_table_entity_slot(&w, entity);
		slot->tts_values[Anum_es_snapshots_seq_no - 1] = Int64GetDatum(seq_no);
		slot->tts_values[Anum_es_snapshots_state - 1] = binary ? (Datum) 0 : state;
		slot->tts_isnull[Anum_es_snapshots_state - 1] = binary;
		slot->tts_values[Anum_es_snapshots_recorded_at - 1] =
			TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		slot->tts_values[Anum_es_snapshots_state_bytes - 1] = binary ? state : (Datum) 0;
		slot->tts_isnull[Anum_es_snapshots_state_bytes - 1] = !binary;
		if (es_snapshots_natts() == Natts_es_snapshots)
			slot->tts_values[Anum_es_snapshots_change - 1] =
				Int64GetDatum(es_feed_draw_position(cat->position_seq, false));
		ExecStoreVirtualTuple(slot);
		es_table_put(&w, old, slot);
	}
	es_table_close(&w);
	return !newer;
}

/*
 * Record that handle_command saved the entity's snapshot at seq_no, under
 * this registration generation: commands start only from such snapshots.
 */
static void
es_claim_snapshot(const EsEntity *entity, int64 seq_no, int64 generation)
{
	const EsCatalog *cat = es_catalog();
	EsTableWriter w;
	TupleTableSlot *old;
	TupleTableSlot *slot;

	old = es_open_entity_row(&w, cat->snapshot_generations, cat->snapshot_generations_pkey,
							 Natts_es_snapshot_generations, es_snapshot_generations_types,
							 entity);
	slot = es_table_entity_slot(&w, entity);
	slot->tts_values[Anum_es_snapshot_generations_seq_no - 1] = Int64GetDatum(seq_no);
	slot->tts_values[Anum_es_snapshot_generations_generation - 1] = Int64GetDatum(generation);
	ExecStoreVirtualTuple(slot);
	es_table_put(&w, old, slot);
	es_table_close(&w);
}

/* Forget handle_command's claim on the entity's snapshot, if it has one */
static void
es_forget_snapshot_claim(const EsEntity *entity)
{
	const EsCatalog *cat = es_catalog();
	EsTableWriter w;
	TupleTableSlot *old;

	old = es_open_entity_row(&w, cat->snapshot_generations, cat->snapshot_generations_pkey,
							 Natts_es_snapshot_generations, es_snapshot_generations_types,
							 entity);
	if (old != NULL)
		es_table_delete(&w, &old->tts_tid);
	es_table_close(&w);
}

/*
 * The snapshot's seq_no (at least 1) must name an event the entity has;
 * the caller holds the entity lock.
 */
static void
es_check_snapshot_seq_no(const EsEntity *entity, int64 seq_no)
{
	int64		last;

	last = es_locked_last_seq_no(entity, -1);
	if (seq_no > last)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("snapshot seq_no " INT64_FORMAT " is beyond the last event of entity %s",
						seq_no, es_entity_string(entity)),
				 errdetail("The entity's last seq_no is " INT64_FORMAT ".", last),
				 errhint("Save a snapshot only of state built from appended events.")));
}

/*
 * handle_command's snapshot of the state it built, at the seq_no it just
 * appended under the entity lock (so not checked again), and its claim on
 * it.  The claim is written even when a newer snapshot is kept: its seq_no
 * then differs from the snapshot's, and commands do not use it.
 */
void
es_save_command_snapshot(const EsEntity *entity, int64 seq_no, Datum state, int64 generation)
{
	(void) es_write_snapshot(entity, seq_no, state, false);
	es_claim_snapshot(entity, seq_no, generation);
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
	if (!es_fetch_by_key(cat->snapshots, cat->snapshots_pkey, keys, 2, es_snapshots_natts(),
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
 * it goes: commands never fold from state they did not build.  It takes
 * the entity lock, as every writer of a snapshot row does.
 */
Datum
eventsourced_save_snapshot(PG_FUNCTION_ARGS)
{
	EsEntity	entity = es_entity_arg(fcinfo, 0, 1);
	int64		seq_no;

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("seq_no must not be null")));
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("state must not be null"),
				 errhint("Use 'null'::jsonb for an empty state.")));
	seq_no = PG_GETARG_INT64(2);
	if (seq_no < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("snapshot seq_no must be at least 1"),
				 errdetail("seq_no was " INT64_FORMAT ".", seq_no)));
	PreventCommandIfReadOnly("eventsourced.save_snapshot()");
	PreventCommandIfParallelMode("eventsourced.save_snapshot()");
	es_lock_entity(&entity);
	es_check_snapshot_seq_no(&entity, seq_no);
	if (es_write_snapshot(&entity, seq_no, PG_GETARG_DATUM(3),
						  get_fn_expr_argtype(fcinfo->flinfo, 3) == BYTEAOID))
		es_forget_snapshot_claim(&entity);
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
