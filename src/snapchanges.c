/*
 * snapchanges.c
 *		The feed of snapshot changes: snapshot_changes(), for readers that
 *		mirror the snapshot store elsewhere (the NATS relay's --snapshots).
 *
 * Snapshots are replaced in place.  From 0.5.0 on every write of a
 * snapshot row (save_snapshot, save_snapshot_bytes, save_snapshot_pb and
 * handle_command's snapshots, all through snapshot.c) draws a change number
 * from the event positions (es_feed_draw_position), kept in the row's
 * "change" column with a unique index.  A reader's horizon (feed.c) comes
 * from that index, so exactly the promise of the event feed holds: a change
 * below the horizon belongs to a transaction that has ended.  A reader that
 * pages by the last change it received therefore never misses the current
 * snapshot of an entity: a write it has not seen either is below the
 * horizon and visible, or draws its change later, above everything the
 * reader returned.  Earlier states of an entity replaced meanwhile are not
 * returned (the table keeps one row per entity).  A change drawn for a
 * snapshot is a gap in the event positions, like a rolled back append.
 */
#include "eventsourced.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

/* Columns of snapshot_changes() */
#define ES_SNAPSHOT_CHANGE_COLS	6
/* The state's column among them */
#define ES_SNAPSHOT_CHANGE_STATE	4

/*
 * The changes as a plain query by the caller (its SELECT grant and any
 * row-level security apply); JSON states as their text's bytes in the
 * database encoding, as the event feed's JSON payloads are.
 */
static const char *const snapshot_changes_sql =
"SELECT s.change, s.entity_type, s.entity_id, s.seq_no, "
"CASE WHEN s.state_bytes IS NULL "
"THEN pg_catalog.convert_to(s.state::pg_catalog.text, pg_catalog.getdatabaseencoding()) "
"ELSE s.state_bytes END, s.state_bytes IS NOT NULL "
"FROM eventsourced.snapshots s "
"WHERE s.change OPERATOR(pg_catalog.>) $1 AND s.change OPERATOR(pg_catalog.<) $2 "
"ORDER BY s.change LIMIT $3";

/* Refuse a store whose snapshots have no change numbers (before 0.5.0) */
static void
es_require_snapshot_changes(void)
{
	if (!OidIsValid(es_catalog()->snapshots_change_key))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("snapshot changes need version 0.5.0 of the extension in this database"),
				 errdetail("Index eventsourced.snapshots_change_key does not exist."),
				 errhint("Run ALTER EXTENSION eventsourced UPDATE.")));
}

/*
 * The state bytes after which a page ends (it holds at least one change):
 * a page of max_count large states would otherwise hold them all in memory
 * at once.  A reader goes on from the last change it received.
 */
#define ES_SNAPSHOT_PAGE_BYTES	((Size) 64 * 1024 * 1024)

/*
 * Run the query with the feed's snapshot and horizon through a cursor,
 * copying its rows one at a time into the SRF's result (a tuplestore,
 * which goes to disk beyond work_mem) until the page is full.
 */
static void
es_snapshot_changes_scan(int64 after, int32 max_count, Tuplestorestate *store, TupleDesc desc)
{
	static const Oid argtypes[3] = {INT8OID, INT8OID, INT8OID};
	MemoryContext caller_cxt = CurrentMemoryContext;
	Datum		args[3];
	int64		horizon;
	Snapshot	snap;
	SPIPlanPtr	plan;
	Portal		portal;
	Size		bytes = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(snapshot_changes_sql, 3, (Oid *) argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	snap = es_feed_snapshot(ES_FEED_SNAPSHOTS, &horizon);
	args[0] = Int64GetDatum(after);
	args[1] = Int64GetDatum(horizon);
	args[2] = Int64GetDatum((int64) max_count);
	/* a read-only cursor runs with the active snapshot: the feed's */
	PushActiveSnapshot(snap);
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);
	PopActiveSnapshot();
	UnregisterSnapshot(snap);
	while (bytes < ES_SNAPSHOT_PAGE_BYTES)
	{
		Datum		values[ES_SNAPSHOT_CHANGE_COLS];
		bool		nulls[ES_SNAPSHOT_CHANGE_COLS];
		MemoryContext old;

		SPI_cursor_fetch(portal, true, 1);
		if (SPI_processed == 0)
			break;
		if (SPI_tuptable->tupdesc->natts != ES_SNAPSHOT_CHANGE_COLS)
			elog(ERROR, "snapshot changes query returned %d columns", SPI_tuptable->tupdesc->natts);
		heap_deform_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, values, nulls);
		if (!nulls[ES_SNAPSHOT_CHANGE_STATE])
			bytes += toast_raw_datum_size(values[ES_SNAPSHOT_CHANGE_STATE]);
		old = MemoryContextSwitchTo(caller_cxt);
		tuplestore_putvalues(store, desc, values, nulls);
		MemoryContextSwitchTo(old);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_finish();
}

PG_FUNCTION_INFO_V1(eventsourced_snapshot_changes);

/*
 * snapshot_changes(after_change, max_count): (change, entity_type,
 * entity_id, seq_no, state, binary_state) of the snapshots whose change is
 * above after_change and below the feed horizon, in change order.
 */
Datum
eventsourced_snapshot_changes(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		after;
	int32		max_count;

	after = es_feed_after_arg(fcinfo, 0, "after_change");
	max_count = es_feed_max_count_arg(fcinfo, 1);
	InitMaterializedSRF(fcinfo, 0);
	es_require_snapshot_changes();
	es_check_select(es_catalog()->snapshots);
	if (es_snapshots_subscribed())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("snapshot changes cannot be read where eventsourced.snapshots is a logical replication target"),
				 errdetail("The publisher's transactions arrive in commit order; which changes are still in flight is known only on the publisher."),
				 errhint("Read snapshot_changes() on the publisher.")));
	if (max_count > 0)
		es_snapshot_changes_scan(after, max_count, rsinfo->setResult, rsinfo->setDesc);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(eventsourced_draw_snapshot_change);

/*
 * draw_snapshot_change(): the default of snapshots.change, for rows that
 * come without one: snapshots stored before 0.5.0 (numbered by the update
 * script) and those of a 0.4.0 dump restored into 0.5.0, whose COPY has no
 * change column.  A restore sets the position sequence back to the dump's
 * value after the tables' data, so the number is nextval() of the sequence,
 * not one of a block of positions (whose end, set in the sequence, the
 * restore would overwrite): a 0.4.0 store has at least as many positions as
 * snapshots, so the restored value is above every change drawn here, and
 * this database's block, if any, is given up.  snapshot.c's writes set the
 * change themselves.
 */
Datum
eventsourced_draw_snapshot_change(PG_FUNCTION_ARGS)
{
	Oid			seqid = es_catalog()->position_seq;
	LOCKTAG		tag;
	int64		change;

	PreventCommandIfParallelMode("eventsourced.draw_snapshot_change()");
	/*
	 * Serialize with refills of position.c (same lock order): a nextval()
	 * between a refill's nextval() and setval() would fall inside the new
	 * block and be handed out again, lower, after this change.
	 */
	LockRelationOid(seqid, RowExclusiveLock);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 0, ES_LOCK_POSITION);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	es_position_forget();
	change = es_feed_draw_position(seqid, true);
	LockRelease(&tag, ExclusiveLock, false);
	PG_RETURN_INT64(change);
}
