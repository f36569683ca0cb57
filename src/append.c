/*
 * append.c
 *		eventsourced.append(): the optimistic concurrency check and the write.
 *
 * An append locks the entity (a transaction-level advisory lock keyed by a
 * hash of type and id), so appends to one entity serialize and appends to
 * different entities never wait for each other.  Under the lock it looks up
 * the entity's last seq_no, including rows that other transactions are
 * still writing, compares it with the writer's expectation and inserts the
 * rows directly into the heap and its indexes: no SQL is parsed or planned.
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/stratnum.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"


/* Events written per table_multi_insert() call */
#define ES_INSERT_CHUNK		1000

/* The open events table and what inserting into it needs */
typedef struct EsWriter
{
	EsTableWriter table;
	Relation	events;
	Relation	event_id_idx;	/* NULL when no event carries an id */
	TupleTableSlot *slots[ES_INSERT_CHUNK];
	int64		last_position;	/* of the last event filled in */
	int			nslots;			/* slots created so far */
	Oid			position_seq;
} EsWriter;

/*
 * Serialize writers of one entity until the end of the transaction; every
 * write takes this lock, so it is where fences are checked.
 */
void
es_lock_entity(const EsEntity *entity)
{
	uint64		h;
	LOCKTAG		tag;

	h = hash_any_extended((unsigned char *) VARDATA_ANY(entity->type),
						  VARSIZE_ANY_EXHDR(entity->type), 0);
	h = hash_any_extended((unsigned char *) VARDATA_ANY(entity->id),
						  VARSIZE_ANY_EXHDR(entity->id), h);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 ES_LOCK_ENTITY);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	es_check_fence(entity);
}

/* Whether any of the events carries an event_id */
static bool
es_any_event_id(const EsEvent *events, int nevents)
{
	for (int i = 0; i < nevents; i++)
		if (events[i].event_id != NULL)
			return true;
	return false;
}

/*
 * Open the events table and its indexes for inserting.  The event_id index
 * (partial: WHERE event_id IS NOT NULL) is left closed when no event carries
 * an id: it would get no entry.
 */
static void
es_writer_open(EsWriter *w, bool with_ids)
{
	const EsCatalog *cat = es_catalog();
	bool		skip = !with_ids && cat->events_event_id_partial;

	es_table_open(&w->table, cat->events, skip ? cat->events_event_id_key : InvalidOid);
	w->events = w->table.rel;
	es_check_shape(w->events, Natts_es_events, es_events_types);
	w->event_id_idx = with_ids ? es_table_index_rel(&w->table, cat->events_event_id_key) : NULL;
	w->position_seq = cat->position_seq;
	w->nslots = 0;
}

/* Close what es_writer_open opened */
static void
es_writer_close(EsWriter *w)
{
	es_table_close(&w->table);
}

/*
 * The seq_no under which this entity already holds event_id, or 0.  An
 * event_id held by another entity is an error: ids are global.
 */
static int64
es_held_event_id(EsWriter *w, const EsEntity *entity, pg_uuid_t *event_id)
{
	ScanKeyData key;
	TupleTableSlot *slot = table_slot_create(w->events, NULL);
	int64		seq_no = 0;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(event_id));
	if (es_fetch_latest(w->events, w->event_id_idx, &key, 1, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		type = slot_getattr(slot, Anum_es_events_entity_type, &isnull);
		Datum		id = slot_getattr(slot, Anum_es_events_entity_id, &isnull);

		if (!DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, type,
												  PointerGetDatum(entity->type))) ||
			!DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, id,
												  PointerGetDatum(entity->id))))
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("event_id %s already belongs to entity %s",
							DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(event_id))),
							es_entity_cstring(TextDatumGetCString(type), TextDatumGetCString(id))),
					 errdetail("Event ids are unique across the whole event log."),
					 errhint("Generate a new event_id for every new event.")));
		seq_no = DatumGetInt64(slot_getattr(slot, Anum_es_events_seq_no, &isnull));
	}
	ExecDropSingleTupleTableSlot(slot);
	return seq_no;
}

/* An event_id of a batch with the event's index, for sorting */
typedef struct EsBatchId
{
	const pg_uuid_t *id;
	int			index;
} EsBatchId;

/* qsort comparator of EsBatchId by id */
static int
es_batch_id_cmp(const void *a, const void *b)
{
	return memcmp(((const EsBatchId *) a)->id->data, ((const EsBatchId *) b)->id->data,
				  UUID_LEN);
}

/* Refuse a batch in which two events carry the same event_id */
void
es_check_event_ids(const EsEvent *events, int nevents)
{
	EsBatchId  *ids;
	int			n = 0;

	if (!es_any_event_id(events, nevents))
		return;
	ids = palloc(sizeof(EsBatchId) * nevents);

	for (int i = 0; i < nevents; i++)
		if (events[i].event_id != NULL)
			ids[n++] = (EsBatchId) {events[i].event_id, i};
	qsort(ids, n, sizeof(EsBatchId), es_batch_id_cmp);
	for (int i = 1; i < n; i++)
		if (es_batch_id_cmp(&ids[i - 1], &ids[i]) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("event_id %s appears twice in the batch",
							DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(ids[i].id)))),
					 errdetail("Events %d and %d of the batch carry it.",
							   Min(ids[i - 1].index, ids[i].index) + 1,
							   Max(ids[i - 1].index, ids[i].index) + 1),
					 errhint("Give every event an event_id of its own.")));
	pfree(ids);
}

/* Refuse a batch some of whose events were appended before */
static void
es_report_partly_appended(const EsEntity *entity, int nheld, int nids)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNIQUE_VIOLATION),
			 errmsg("batch for entity %s was partly appended before", es_entity_string(entity)),
			 errdetail("The entity holds %d of the batch's %d event ids, but not as one earlier append of this same batch.",
					   nheld, nids),
			 errhint("Retry a batch with exactly the events, and event ids, of the first attempt.")));
}

/* Whether the entity's event at seq_no exists and has this event_type */
static bool
es_event_type_at(EsWriter *w, const EsEntity *entity, int64 seq_no, text *event_type)
{
	Relation	pkey = es_table_index_rel(&w->table, es_catalog()->events_pkey);
	TupleTableSlot *slot = table_slot_create(w->events, NULL);
	bool		same = false;

	if (es_fetch_seq_no(w->events, pkey, entity, BTEqualStrategyNumber, F_INT8EQ, seq_no, slot))
	{
		bool		isnull;

		same = DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID,
													slot_getattr(slot, Anum_es_events_event_type, &isnull),
													PointerGetDatum(event_type)));
	}
	ExecDropSingleTupleTableSlot(slot);
	return same;
}

/*
 * Idempotent retry: when every event that carries an id is held by this
 * entity, each at the seq_no it has in one earlier append of the same
 * batch (first seq_no + its index), and the events without an id find
 * events of their type at theirs, the batch was appended before: the
 * seq_no of that append's last event.  0 when no id is held.  Anything in
 * between is an error.
 */
static int64
es_retried_append(EsWriter *w, const EsEntity *entity, const EsEvent *events, int nevents)
{
	int			nids = 0;
	int			nheld = 0;
	int64		first = 0;
	bool		aligned = true;

	for (int i = 0; i < nevents; i++)
	{
		int64		seq_no;

		if (events[i].event_id == NULL)
			continue;
		nids++;
		seq_no = es_held_event_id(w, entity, events[i].event_id);
		if (seq_no == 0)
			continue;
		if (nheld++ == 0)
			first = seq_no - i;
		aligned = aligned && (seq_no - i == first);
	}
	if (nheld == 0)
		return 0;
	if (nheld < nids || !aligned || first < 1)
		es_report_partly_appended(entity, nheld, nids);
	for (int i = 0; i < nevents; i++)
		if (events[i].event_id == NULL &&
			!es_event_type_at(w, entity, first + i, events[i].event_type))
			es_report_partly_appended(entity, nheld, nids);
	return first + nevents - 1;
}

/* Refuse the append when the last seq_no is not what the writer expected */
static void
es_check_expected(const EsEntity *entity, int64 expected, int64 last)
{
	if (expected < 0 || expected == last)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_ES_SEQUENCE_CONFLICT),
			 errmsg("sequence conflict on entity %s", es_entity_string(entity)),
			 errdetail("Expected last seq_no " INT64_FORMAT ", actual last seq_no " INT64_FORMAT ".",
					   expected, last),
			 errhint("Read the entity's new events and decide again.")));
}

/* The i-th insert slot, created on first use */
static TupleTableSlot *
es_writer_slot(EsWriter *w, int i)
{
	if (i >= w->nslots)
	{
		w->slots[i] = es_table_slot(&w->table);
		w->nslots = i + 1;
	}
	return w->slots[i];
}

/* Fill a slot with one event row */
static void
es_fill_event(EsWriter *w, TupleTableSlot *slot, const EsEntity *entity,
			  int64 seq_no, const EsEvent *ev)
{
	Datum	   *values = slot->tts_values;
	bool	   *nulls = slot->tts_isnull;

	ExecClearTuple(slot);
	values[Anum_es_events_entity_type - 1] = PointerGetDatum(entity->type);
	values[Anum_es_events_entity_id - 1] = PointerGetDatum(entity->id);
	values[Anum_es_events_seq_no - 1] = Int64GetDatum(seq_no);
	w->last_position = es_feed_draw_position(w->position_seq, false);
	values[Anum_es_events_position - 1] = Int64GetDatum(w->last_position);
	values[Anum_es_events_event_type - 1] = PointerGetDatum(ev->event_type);
	values[Anum_es_events_payload - 1] = ev->binary ? (Datum) 0 : ev->payload;
	values[Anum_es_events_payload_bytes - 1] = ev->binary ? ev->payload : (Datum) 0;
	values[Anum_es_events_metadata - 1] = ev->metadata;
	values[Anum_es_events_event_id - 1] = UUIDPGetDatum(ev->event_id);
	values[Anum_es_events_recorded_at - 1] =
		TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	memset(nulls, 0, sizeof(bool) * Natts_es_events);
	nulls[Anum_es_events_metadata - 1] = !ev->has_metadata;
	nulls[Anum_es_events_event_id - 1] = (ev->event_id == NULL);
	nulls[Anum_es_events_payload - 1] = ev->binary;
	nulls[Anum_es_events_payload_bytes - 1] = !ev->binary;
	ExecStoreVirtualTuple(slot);
}

/*
 * Insert events with consecutive seq_nos from first_seq_no: rows go to the
 * heap in chunks (one WAL record per page for batches), then their index
 * entries.
 */
static void
es_insert_events(EsWriter *w, const EsEntity *entity, int64 first_seq_no,
				 const EsEvent *events, int nevents)
{
	CommandId	cid = GetCurrentCommandId(true);

	for (int done = 0; done < nevents; done += ES_INSERT_CHUNK)
	{
		int			n = Min(ES_INSERT_CHUNK, nevents - done);

		for (int i = 0; i < n; i++)
			es_fill_event(w, es_writer_slot(w, i), entity,
						  first_seq_no + done + i, &events[done + i]);
		if (n == 1)
			table_tuple_insert(w->events, w->slots[0], cid, 0, NULL);
		else
			table_multi_insert(w->events, w->slots, n, cid, 0, NULL);
		for (int i = 0; i < n; i++)
			es_table_index(&w->table, w->slots[i]);
	}
}

/*
 * The internal append: events validated (names, payloads, and
 * es_check_event_ids) to an entity whose lock the caller holds
 * (es_lock_entity), in a transaction that may write; returns the entity's
 * last seq_no afterwards.  expected < 0 skips the concurrency check.  An
 * exact retry of an earlier append writes nothing and returns that
 * append's last seq_no.
 */
int64
es_append_locked(const EsEntity *entity, int64 expected,
				 const EsEvent *events, int nevents)
{
	EsWriter	w;
	int64		last;

	es_writer_open(&w, es_any_event_id(events, nevents));

	last = es_retried_append(&w, entity, events, nevents);
	if (last == 0)
	{
		last = es_locked_last_seq_no(entity, expected);
		es_check_expected(entity, expected, last);
		es_insert_events(&w, entity, last + 1, events, nevents);
		last += nevents;
		es_locked_last_set(entity, last);
		es_notify_note(entity->type, w.last_position);
	}
	es_writer_close(&w);
	return last;
}

/* Append validated events: lock the entity, then es_append_locked() */
int64
es_append_events(const EsEntity *entity, int64 expected,
				 const EsEvent *events, int nevents)
{
	PreventCommandIfReadOnly("eventsourced.append()");
	PreventCommandIfParallelMode("eventsourced.append()");
	es_check_event_ids(events, nevents);
	es_lock_entity(entity);
	return es_append_locked(entity, expected, events, nevents);
}

/*
 * The single event of append()/append_binary(): arguments 3..6 are
 * event_type, payload (jsonb, or bytea when binary), metadata, event_id.
 */
static void
es_event_args(FunctionCallInfo fcinfo, bool binary, EsEvent *ev)
{
	ev->event_type = es_name_arg(fcinfo, 3, "event_type", ES_MAX_TYPE_LEN);
	es_check_payload(PG_ARGISNULL(4));
	ev->payload = PG_GETARG_DATUM(4);
	ev->binary = binary;
	ev->has_metadata = !PG_ARGISNULL(5);
	ev->metadata = ev->has_metadata ? PG_GETARG_DATUM(5) : (Datum) 0;
	ev->event_id = PG_ARGISNULL(6) ? NULL : PG_GETARG_UUID_P(6);
}

/* append() and append_binary(): one event, JSON or binary */
static Datum
es_append_one(FunctionCallInfo fcinfo, bool binary)
{
	EsEntity	entity = es_entity_arg(fcinfo, 0, 1);
	int64		expected = es_expected_arg(fcinfo, 2);
	EsEvent		ev;

	es_event_args(fcinfo, binary, &ev);
	PG_RETURN_INT64(es_append_events(&entity, expected, &ev, 1));
}

PG_FUNCTION_INFO_V1(eventsourced_append);

/* append(entity_type, entity_id, expected_seq_no, event_type, payload jsonb, metadata, event_id) */
Datum
eventsourced_append(PG_FUNCTION_ARGS)
{
	return es_append_one(fcinfo, false);
}

PG_FUNCTION_INFO_V1(eventsourced_append_binary);

/* append_binary(entity_type, entity_id, expected_seq_no, event_type, payload bytea, metadata, event_id) */
Datum
eventsourced_append_binary(PG_FUNCTION_ARGS)
{
	return es_append_one(fcinfo, true);
}

/* One element of an event_data[] array, validated */
static void
es_event_from_composite(Datum composite, TupleDesc desc, int index, EsEvent *ev)
{
	HeapTupleHeader th = DatumGetHeapTupleHeader(composite);
	HeapTupleData tuple;
	Datum		values[4];
	bool		nulls[4];

	tuple.t_len = HeapTupleHeaderGetDatumLength(th);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = th;
	heap_deform_tuple(&tuple, desc, values, nulls);

	ev->event_type = nulls[0] ? NULL : DatumGetTextPP(values[0]);
	es_check_name(ev->event_type, psprintf("event_type of event %d", index + 1),
				  ES_MAX_TYPE_LEN);
	if (nulls[1])
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload of event %d must not be null", index + 1),
				 errhint("Use '{}' or 'null'::jsonb for an event without data.")));
	ev->payload = values[1];
	ev->binary = false;
	ev->has_metadata = !nulls[2];
	ev->metadata = nulls[2] ? (Datum) 0 : values[2];
	ev->event_id = nulls[3] ? NULL : DatumGetUUIDP(values[3]);
}

/* The attribute types of eventsourced.event_data */
static const Oid event_data_types[] = {TEXTOID, JSONBOID, JSONBOID, UUIDOID};

/*
 * The events of an event_data[] array, validated (none when it is empty);
 * sets *nevents.  The append's argument and a command's decision both come
 * this way, so both are checked alike.
 */
EsEvent *
es_events_from_array(ArrayType *arr, int *nevents)
{
	Datum	   *elems;
	bool	   *elem_nulls;
	int			n;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	TupleDesc	desc;
	EsEvent    *events;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("events must be a one-dimensional array")));
	get_typlenbyvalalign(ARR_ELEMTYPE(arr), &typlen, &typbyval, &typalign);
	deconstruct_array(arr, ARR_ELEMTYPE(arr), typlen, typbyval, typalign,
					  &elems, &elem_nulls, &n);
	*nevents = n;
	if (n == 0)
		return NULL;
	desc = lookup_rowtype_tupdesc(ARR_ELEMTYPE(arr), -1);
	es_check_tupdesc(desc, "type eventsourced.event_data", lengthof(event_data_types),
					 event_data_types);
	events = palloc(sizeof(EsEvent) * n);
	for (int i = 0; i < n; i++)
	{
		if (elem_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("event %d of the events array is null", i + 1)));
		es_event_from_composite(elems[i], desc, i, &events[i]);
	}
	ReleaseTupleDesc(desc);
	return events;
}

/* The events of an event_data[] argument, validated: not null, not empty */
static EsEvent *
es_events_arg(FunctionCallInfo fcinfo, int argno, int *nevents)
{
	EsEvent    *events;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("events must not be null")));
	events = es_events_from_array(PG_GETARG_ARRAYTYPE_P(argno), nevents);
	if (*nevents == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events must not be empty"),
				 errhint("Pass at least one eventsourced.event(...).")));
	return events;
}

PG_FUNCTION_INFO_V1(eventsourced_append_batch);

/* append(entity_type, entity_id, expected_seq_no, events event_data[]) */
Datum
eventsourced_append_batch(PG_FUNCTION_ARGS)
{
	EsEntity	entity = es_entity_arg(fcinfo, 0, 1);
	int64		expected = es_expected_arg(fcinfo, 2);
	int			nevents;
	EsEvent    *events = es_events_arg(fcinfo, 3, &nevents);

	PG_RETURN_INT64(es_append_events(&entity, expected, events, nevents));
}
