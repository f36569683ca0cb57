/*
 * read.c
 *		The event feed: events_by_type() and read_all(), in position order,
 *		returning only positions below the feed horizon (see feed.c), so a
 *		reader paging by the last position it received never skips an event.
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/rls.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

/*
 * The position argument a feed reader resumes after (after_position, or
 * snapshot_changes' after_change: its name), validated
 */
int64
es_feed_after_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	int64		after;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name),
				 errhint("Pass 0 to read from the beginning.")));
	after = PG_GETARG_INT64(argno);
	if (after < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", name),
				 errdetail("%s was " INT64_FORMAT ".", name, after)));
	return after;
}

/* The max_count argument of a feed reader, validated */
int32
es_feed_max_count_arg(FunctionCallInfo fcinfo, int argno)
{
	int32		max_count;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_count must not be null")));
	max_count = PG_GETARG_INT32(argno);
	if (max_count < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_count must not be negative"),
				 errdetail("max_count was %d.", max_count)));
	return max_count;
}

/*
 * The arguments of a feed function, validated: (entity_type, after_position,
 * max_count) when by_type, else (after_position, max_count).
 */
void
es_feed_args(FunctionCallInfo fcinfo, bool by_type, EsFeedRequest *req)
{
	int			argno = by_type ? 1 : 0;

	req->entity_type = by_type ?
		es_name_arg(fcinfo, 0, "entity_type", ES_MAX_TYPE_LEN) : NULL;
	req->after_position = es_feed_after_arg(fcinfo, argno, "after_position");
	req->max_count = es_feed_max_count_arg(fcinfo, argno + 1);
}

/*
 * Where a reader resumes after a read that returned count events, the last
 * at position last, from a scan bounded by horizon: after the last event
 * when the page is full (more may follow), else just below the horizon,
 * since every event of the request below it was returned and every later
 * commit gets a position at or above it; never before after_position.
 */
static int64
es_feed_resume(const EsFeedRequest *req, int32 count, int64 last, int64 horizon)
{
	if (count > 0 && count >= req->max_count)
		return last;
	return Max(req->after_position, horizon - 1);
}

/* Where an SRF puts its rows */
typedef struct EsFeedSrf
{
	bool		with_type;		/* read_all()'s columns, else events_by_type()'s */
	Tuplestorestate *store;
	TupleDesc	desc;
} EsFeedSrf;

/* Copy one event row into an SRF's result, in the function's column order */
static void
es_feed_emit(TupleTableSlot *slot, void *arg)
{
	EsFeedSrf  *srf = (EsFeedSrf *) arg;
	bool		with_type = srf->with_type;
	static const int by_type_cols[] = {
		Anum_es_events_position, Anum_es_events_entity_id, Anum_es_events_seq_no,
		Anum_es_events_event_type, Anum_es_events_payload, Anum_es_events_metadata,
		Anum_es_events_event_id, Anum_es_events_recorded_at, Anum_es_events_payload_bytes
	};
	static const int all_cols[] = {
		Anum_es_events_position, Anum_es_events_entity_type, Anum_es_events_entity_id,
		Anum_es_events_seq_no, Anum_es_events_event_type, Anum_es_events_payload,
		Anum_es_events_metadata, Anum_es_events_event_id, Anum_es_events_recorded_at,
		Anum_es_events_payload_bytes
	};
	const int  *cols = with_type ? all_cols : by_type_cols;
	int			ncols = with_type ? lengthof(all_cols) : lengthof(by_type_cols);
	Datum		values[Natts_es_events];
	bool		nulls[Natts_es_events];

	for (int i = 0; i < ncols; i++)
	{
		values[i] = slot->tts_values[cols[i] - 1];
		nulls[i] = slot->tts_isnull[cols[i] - 1];
	}
	tuplestore_putvalues(srf->store, srf->desc, values, nulls);
}

/* Whether an index entry of the position index belongs to the wanted type */
static bool
es_feed_entry_matches(IndexScanDesc scan, const EsFeedRequest *req)
{
	bool		isnull;
	text	   *type;

	if (req->entity_type == NULL)
		return true;
	type = (text *) DatumGetPointer(index_getattr(scan->xs_itup, 2, scan->xs_itupdesc, &isnull));
	if (isnull)
		return false;
	if (VARATT_IS_COMPRESSED(type) || VARATT_IS_EXTERNAL(type))
		return DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, PointerGetDatum(type),
													PointerGetDatum(req->entity_type)));
	return VARSIZE_ANY_EXHDR(type) == VARSIZE_ANY_EXHDR(req->entity_type) &&
		memcmp(VARDATA_ANY(type), VARDATA_ANY(req->entity_type), VARSIZE_ANY_EXHDR(type)) == 0;
}

/* The feed as a plain query (events' columns in table order), for row-level security */
static const char *const feed_policy_sql[2] = {
	"SELECT e.entity_type, e.entity_id, e.seq_no, e.\"position\", e.event_type, e.payload, "
	"e.metadata, e.event_id, e.recorded_at, e.payload_bytes FROM eventsourced.events e "
	"WHERE e.\"position\" OPERATOR(pg_catalog.>) $1 AND e.\"position\" OPERATOR(pg_catalog.<) $2 "
	"ORDER BY e.\"position\" LIMIT $3",
	"SELECT e.entity_type, e.entity_id, e.seq_no, e.\"position\", e.event_type, e.payload, "
	"e.metadata, e.event_id, e.recorded_at, e.payload_bytes FROM eventsourced.events e "
	"WHERE e.\"position\" OPERATOR(pg_catalog.>) $1 AND e.\"position\" OPERATOR(pg_catalog.<) $2 "
	"AND e.entity_type OPERATOR(pg_catalog.=) $4 COLLATE pg_catalog.\"C\" "
	"ORDER BY e.\"position\" LIMIT $3"
};

/*
 * The feed for a role that row-level security policies apply to: the same
 * rows a plain SELECT by that role sees, with the same snapshot and horizon
 * as the index scan, so paging never skips an event either.
 */
static int32
es_feed_scan_policies(const EsFeedRequest *req, EsFeedEmit emit, void *arg, int64 *resume)
{
	static const Oid argtypes[4] = {INT8OID, INT8OID, INT8OID, TEXTOID};
	MemoryContext caller_cxt = CurrentMemoryContext;
	bool		by_type = (req->entity_type != NULL);
	Datum		values[4];
	int64		horizon;
	Snapshot	snap;
	SPIPlanPtr	plan;
	TupleTableSlot *slot;
	uint64		n;
	int64		last = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(feed_policy_sql[by_type], by_type ? 4 : 3, (Oid *) argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	snap = es_feed_snapshot(ES_FEED_EVENTS, &horizon);
	values[0] = Int64GetDatum(req->after_position);
	values[1] = Int64GetDatum(horizon);
	values[2] = Int64GetDatum((int64) req->max_count);
	values[3] = by_type ? PointerGetDatum(req->entity_type) : (Datum) 0;
	if (SPI_execute_snapshot(plan, values, NULL, snap, InvalidSnapshot, true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "feed query failed");
	UnregisterSnapshot(snap);
	n = SPI_processed;
	slot = MakeSingleTupleTableSlot(SPI_tuptable->tupdesc, &TTSOpsHeapTuple);
	for (uint64 i = 0; i < n; i++)
	{
		MemoryContext old;

		ExecStoreHeapTuple(SPI_tuptable->vals[i], slot, false);
		slot_getallattrs(slot);
		last = DatumGetInt64(slot->tts_values[Anum_es_events_position - 1]);
		old = MemoryContextSwitchTo(caller_cxt);
		emit(slot, arg);
		MemoryContextSwitchTo(old);
	}
	ExecDropSingleTupleTableSlot(slot);
	SPI_finish();
	*resume = es_feed_resume(req, (int32) n, last, horizon);
	return (int32) n;
}

/*
 * Open the index a feed request scans and set its keys: for a request of
 * one type, the (entity_type, position) index (from 0.3.0 on), so a rare
 * type costs what it returns; else the position index, whose entries
 * carry the type.  Returns the position's attribute number in it.
 */
static AttrNumber
es_feed_index(const EsFeedRequest *req, Relation *index, ScanKeyData *keys, int *nkeys)
{
	const EsCatalog *cat = es_catalog();

	if (req->entity_type == NULL || !OidIsValid(cat->events_type_position_idx))
	{
		*index = index_open(cat->events_position_key, AccessShareLock);
		ScanKeyInit(&keys[0], 1, BTGreaterStrategyNumber, F_INT8GT,
					Int64GetDatum(req->after_position));
		*nkeys = 1;
		return 1;
	}
	*index = index_open(cat->events_type_position_idx, AccessShareLock);
	ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   C_COLLATION_OID, F_TEXTEQ, PointerGetDatum(req->entity_type));
	ScanKeyInit(&keys[1], 2, BTGreaterStrategyNumber, F_INT8GT,
				Int64GetDatum(req->after_position));
	*nkeys = 2;
	return 2;
}

/*
 * Scan the feed's index from after_position up to the horizon, handing
 * each event (a slot of the events table, all attributes deformed) to emit.
 * On the position index, entries of other types are skipped on the index
 * tuple alone; only wanted entries visit the table (and its visibility
 * check).  Returns the number of events emitted, and sets *resume (if not
 * NULL) to where the reader resumes (es_feed_resume).
 */
int32
es_feed_scan(const EsFeedRequest *req, EsFeedEmit emit, void *arg, int64 *resume)
{
	const EsCatalog *cat = es_catalog();
	Relation	events;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData keys[2];
	int			nkeys;
	AttrNumber	posatt;
	int64		horizon;
	int64		last = 0;
	int64		ignored;
	Snapshot	snap;
	int32		count = 0;

	if (resume == NULL)
		resume = &ignored;
	*resume = req->after_position;
	if (req->max_count == 0)
		return 0;
	if (check_enable_rls(cat->events, InvalidOid, false) == RLS_ENABLED)
		return es_feed_scan_policies(req, emit, arg, resume);

	events = table_open(cat->events, AccessShareLock);
	es_check_shape(events, Natts_es_events, es_events_types);
	posatt = es_feed_index(req, &index, keys, &nkeys);

	snap = es_feed_snapshot(ES_FEED_EVENTS, &horizon);
	slot = table_slot_create(events, NULL);
	scan = index_beginscan(events, index, snap, nkeys, 0);
	scan->xs_want_itup = true;
	index_rescan(scan, keys, nkeys, NULL, 0);
	while (count < req->max_count &&
		   index_getnext_tid(scan, ForwardScanDirection) != NULL)
	{
		bool		isnull;
		int64		pos = DatumGetInt64(index_getattr(scan->xs_itup, posatt, scan->xs_itupdesc, &isnull));

		if (pos >= horizon)
			break;
		if ((posatt == 1 && !es_feed_entry_matches(scan, req)) || !index_fetch_heap(scan, slot))
			continue;
		slot_getallattrs(slot);
		emit(slot, arg);
		last = pos;
		count++;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snap);
	index_close(index, AccessShareLock);
	table_close(events, AccessShareLock);
	*resume = es_feed_resume(req, count, last, horizon);
	return count;
}

/* Run a feed request as a set-returning function */
static void
es_feed_read(FunctionCallInfo fcinfo, const EsFeedRequest *req)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EsFeedSrf	srf;

	InitMaterializedSRF(fcinfo, 0);
	es_check_select(es_catalog()->events);
	srf.with_type = (req->entity_type == NULL);
	srf.store = rsinfo->setResult;
	srf.desc = rsinfo->setDesc;
	(void) es_feed_scan(req, es_feed_emit, &srf, NULL);
}

PG_FUNCTION_INFO_V1(eventsourced_events_by_type);

/* events_by_type(entity_type, after_position, max_count) */
Datum
eventsourced_events_by_type(PG_FUNCTION_ARGS)
{
	EsFeedRequest req;

	es_feed_args(fcinfo, true, &req);
	es_feed_read(fcinfo, &req);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(eventsourced_read_all);

/* read_all(after_position, max_count) */
Datum
eventsourced_read_all(PG_FUNCTION_ARGS)
{
	EsFeedRequest req;

	es_feed_args(fcinfo, false, &req);
	es_feed_read(fcinfo, &req);
	return (Datum) 0;
}

/* Remember the position of the one event a checkpoint probe finds */
static void
es_feed_note_position(TupleTableSlot *slot, void *arg)
{
	*(int64 *) arg = DatumGetInt64(slot->tts_values[Anum_es_events_position - 1]);
}

PG_FUNCTION_INFO_V1(eventsourced_feed_checkpoint);

/*
 * feed_checkpoint(entity_type, after_position): the highest position a
 * reader of the type (NULL: of every type) at after_position may resume
 * from without missing an event, now or later: just below the next event
 * it has not read, or just below the horizon.  An idle reader moves its
 * checkpoint there, so its next poll starts past what held nothing for it.
 */
Datum
eventsourced_feed_checkpoint(PG_FUNCTION_ARGS)
{
	EsFeedRequest req;
	int64		next = 0;
	int64		resume;

	req.entity_type = PG_ARGISNULL(0) ? NULL :
		es_name_arg(fcinfo, 0, "entity_type", ES_MAX_TYPE_LEN);
	req.after_position = es_feed_after_arg(fcinfo, 1, "after_position");
	req.max_count = 1;
	es_check_select(es_catalog()->events);
	if (es_feed_scan(&req, es_feed_note_position, &next, &resume) > 0)
		resume = next - 1;
	PG_RETURN_INT64(resume);
}
