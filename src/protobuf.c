/*
 * protobuf.c
 *		The protobuf wire format (proto/eventsourced.proto): the feed as one
 *		EventBatch message, appends from an EventBatch, snapshots as Snapshot
 *		messages.  Encoding and decoding use the protoc-c generated code with
 *		an allocator on the current memory context.
 *
 * Input is never trusted: before protobuf-c unpacks a batch, a scan of its
 * wire format (pbwire.c) checks it and bounds the number of events, so the
 * memory an unpack needs is bounded by the input size.  Every string
 * is checked against the database encoding; JSON payloads and metadata must
 * parse as JSON; event ids must be UUIDs.
 */
#include "eventsourced.h"

#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "eventsourced.pb-c.h"
#include "pbwire.h"

/* Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01 */
#define ES_UNIX_EPOCH_OFFSET_US \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY)

/*
 * What protobuf-c may allocate to decode one EventBatch of len bytes: a
 * well-formed batch needs its own bytes plus about 140 bytes per event
 * (100,000 small events take about 14 MB), but a hostile one of unknown
 * fields could ask for up to 96 bytes per input byte (test/fuzz).
 */
#define ES_PB_DECODE_BUDGET(len)	((size_t) 64 * 1024 * 1024 + 2 * (size_t) (len))

/* The bytes protobuf-c may still allocate for one decode */
typedef struct EsPbBudget
{
	size_t		left;
	bool		exhausted;		/* a request went over the budget */
	bool		out_of_memory;	/* the server could not allocate a request */
} EsPbBudget;

/*
 * protobuf-c allocations in the current memory context, charged to the
 * budget in ctx; NULL when too large or over budget.
 */
static void *
es_pb_alloc(void *ctx, size_t size)
{
	EsPbBudget *budget = ctx;
	void	   *p;

	if (size == 0)
		return NULL;
	if (size > budget->left || !AllocSizeIsValid(size))
	{
		budget->exhausted = true;
		return NULL;
	}
	budget->left -= size;
	p = MemoryContextAllocExtended(CurrentMemoryContext, size, MCXT_ALLOC_NO_OOM);
	if (p == NULL)
		budget->out_of_memory = true;
	return p;
}

/* Counterpart of es_pb_alloc */
static void
es_pb_free(void *ctx, void *p)
{
	if (p)
		pfree(p);
}

/*
 * Refuse the protobuf functions in a database whose encoding is not UTF8:
 * protobuf strings are UTF-8, and what such a database stores (SQL_ASCII
 * takes any byte) would not be valid protobuf on the way out.
 */
void
es_pb_require_utf8(const char *function)
{
	if (GetDatabaseEncoding() == PG_UTF8)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s needs a database whose encoding is UTF8", function),
			 errdetail("Protobuf strings are UTF-8; this database's encoding is %s.",
					   GetDatabaseEncodingName()),
			 errhint("Use a database created with ENCODING 'UTF8'.")));
}

/* Report malformed protobuf input */
static void
es_pb_malformed(const char *what, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid %s message", what),
			 errdetail("%s", detail),
			 errhint("Encode it with proto/eventsourced.proto.")));
}

/*
 * Check the wire format of an EventBatch and count its events, before
 * protobuf-c allocates anything for it (pbwire.c); report what it refuses.
 */
static int
es_pb_count_events(const uint8 *buf, size_t len)
{
	EsPbWireResult res = es_pbwire_check_batch(buf, len);
	char	   *detail = NULL;

	switch (res.error)
	{
		case ES_PBWIRE_OK:
			return res.nevents;
		case ES_PBWIRE_TOO_MANY_EVENTS:
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("EventBatch holds more than %d events", ES_PBWIRE_MAX_EVENTS),
					 errhint("Append in several batches.")));
			break;
		case ES_PBWIRE_BAD_KEY:
			detail = psprintf("Bad field key at byte %zu.", res.offset);
			break;
		case ES_PBWIRE_BAD_FIELD:
			detail = psprintf("Field %llu at byte %zu is truncated or has an unknown wire type.",
							  (unsigned long long) res.field, res.offset);
			break;
		case ES_PBWIRE_EVENT_BAD_KEY:
			detail = psprintf("Event %d has a bad field key at byte %zu.", res.event, res.offset);
			break;
		case ES_PBWIRE_EVENT_TRUNCATED:
			detail = psprintf("Event %d is truncated.", res.event);
			break;
		case ES_PBWIRE_EVENT_NUL:
			detail = psprintf("Field %llu of event %d contains a NUL byte.",
							  (unsigned long long) res.field, res.event);
			break;
	}
	es_pb_malformed("EventBatch", detail);
	return 0;
}

/* A string from a message, checked: non-empty, bounded, valid in our encoding */
static text *
es_pb_name(const char *s, const char *what, int maxlen)
{
	text	   *t;

	if (!pg_verifymbstr(s, strlen(s), true))
		es_pb_malformed("EventBatch", psprintf("%s is not valid in the database encoding.", what));
	t = cstring_to_text(s);
	es_check_name(t, what, maxlen);
	return t;
}

/* JSON bytes from a message as jsonb; the bytes must be JSON text without NULs */
static Datum
es_pb_json(ProtobufCBinaryData data, const char *what)
{
	char	   *s;

	if (memchr(data.data, '\0', data.len) != NULL)
		es_pb_malformed("EventBatch", psprintf("%s contains a NUL byte.", what));
	s = pnstrdup((const char *) data.data, data.len);
	if (!pg_verifymbstr(s, data.len, true))
		es_pb_malformed("EventBatch", psprintf("%s is not valid in the database encoding.", what));
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(s));
}

/* One event of an EventBatch to append, validated */
static void
es_pb_event(const Eventsourced__Event *in, EsEvent *ev)
{
	ev->event_type = es_pb_name(in->event_type, "event_type", ES_MAX_TYPE_LEN);
	ev->binary = (in->payload_format == EVENTSOURCED__PAYLOAD_FORMAT__PAYLOAD_FORMAT_BINARY);
	if (!ev->binary && in->payload_format != EVENTSOURCED__PAYLOAD_FORMAT__PAYLOAD_FORMAT_JSON)
		es_pb_malformed("EventBatch", psprintf("Unknown payload_format %d.", (int) in->payload_format));
	if (ev->binary)
	{
		bytea	   *b = palloc(VARHDRSZ + in->payload.len);

		SET_VARSIZE(b, VARHDRSZ + in->payload.len);
		memcpy(VARDATA(b), in->payload.data, in->payload.len);
		ev->payload = PointerGetDatum(b);
	}
	else
		ev->payload = es_pb_json(in->payload, "payload");
	ev->has_metadata = (in->metadata.len > 0);
	ev->metadata = ev->has_metadata ? es_pb_json(in->metadata, "metadata") : (Datum) 0;
	ev->event_id = NULL;
	if (in->event_id[0] == '\0')
		return;
	if (!pg_verifymbstr(in->event_id, strlen(in->event_id), true))
		es_pb_malformed("EventBatch", "event_id is not valid in the database encoding.");
	ev->event_id = DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(in->event_id)));
}

PG_FUNCTION_INFO_V1(eventsourced_append_pb);

/* append_pb(batch bytea, expected_seq_no): events of one entity from an EventBatch */
Datum
eventsourced_append_pb(PG_FUNCTION_ARGS)
{
	bytea	   *raw;
	int64		expected = es_expected_arg(fcinfo, 1);
	Eventsourced__EventBatch *batch;
	EsEntity	entity;
	EsEvent    *events;
	EsPbBudget	budget = {0, false, false};
	ProtobufCAllocator allocator = {es_pb_alloc, es_pb_free, &budget};

	es_pb_require_utf8("append_pb");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("batch must not be null")));
	raw = PG_GETARG_BYTEA_PP(0);
	if (es_pb_count_events((uint8 *) VARDATA_ANY(raw), VARSIZE_ANY_EXHDR(raw)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("EventBatch holds no events")));
	budget.left = ES_PB_DECODE_BUDGET(VARSIZE_ANY_EXHDR(raw));
	batch = eventsourced__event_batch__unpack(&allocator, VARSIZE_ANY_EXHDR(raw),
											  (uint8 *) VARDATA_ANY(raw));
	if (batch == NULL && budget.exhausted)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("EventBatch needs more than %zu bytes to decode",
						ES_PB_DECODE_BUDGET(VARSIZE_ANY_EXHDR(raw))),
				 errdetail("Decoding may take 64 MB plus twice the batch's size."),
				 errhint("Leave out unknown fields, or append in several batches.")));
	if (batch == NULL && budget.out_of_memory)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed while decoding an EventBatch of %zu bytes.",
						   (size_t) VARSIZE_ANY_EXHDR(raw))));
	if (batch == NULL)
		es_pb_malformed("EventBatch", "protobuf-c could not decode it.");

	events = palloc(sizeof(EsEvent) * batch->n_events);
	for (size_t i = 0; i < batch->n_events; i++)
	{
		/* each event's names are checked before a message may print them */
		EsEntity	other = {es_pb_name(batch->events[i]->entity_type, "entity_type", ES_MAX_TYPE_LEN),
		es_pb_name(batch->events[i]->entity_id, "entity_id", ES_MAX_ID_LEN)};

		if (i == 0)
			entity = other;
		else if (strcmp(batch->events[i]->entity_type, batch->events[0]->entity_type) != 0 ||
				 strcmp(batch->events[i]->entity_id, batch->events[0]->entity_id) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("all events of an EventBatch to append must belong to one entity"),
					 errdetail("Event %zu is for %s, event 1 for %s.", i + 1,
							   es_entity_string(&other), es_entity_string(&entity))));
		es_pb_event(batch->events[i], &events[i]);
	}
	PG_RETURN_INT64(es_append_events(&entity, expected, events, (int) batch->n_events));
}

/* JSON text of a jsonb value, as message bytes (for the Snapshot message) */
static ProtobufCBinaryData
es_pb_json_bytes(Datum jsonb)
{
	Jsonb	   *jb = DatumGetJsonbP(jsonb);
	char	   *s = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	ProtobufCBinaryData out = {strlen(s), (uint8 *) s};

	return out;
}

/* A packed message as bytea */
static bytea *
es_pb_pack(const ProtobufCMessage *msg)
{
	size_t		size = protobuf_c_message_get_packed_size(msg);
	bytea	   *out;

	if (size > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("protobuf message of %zu bytes is too large", size),
				 errhint("Ask for fewer events (max_count).")));
	out = palloc(VARHDRSZ + size);
	SET_VARSIZE(out, VARHDRSZ + size);
	protobuf_c_message_pack(msg, (uint8 *) VARDATA(out));
	return out;
}

/*
 * The EventBatch encoder.  Feed batches are written straight from the
 * scanned rows into one buffer, without building protobuf-c structures:
 * the schema is ours and fixed, and this is the hot path of consumers.
 * Fields at their default value are omitted, as proto3 encoders do.
 */
#define ES_PB_UUID_TEXT_LEN		36
#define ES_PB_MAX_FIELD_HEAD	(1 + ES_PBWIRE_MAX_VARINT_BYTES)
#define ES_PB_PRESIZE_MAX		(64.0 * 1024 * 1024)	/* largest buffer reserved up front */

/* What the encoder keeps between rows */
typedef struct EsPbBatch
{
	StringInfoData buf;			/* the message, after a VARHDRSZ gap */
	StringInfoData json;		/* scratch: one JSON text */
	StringInfoData meta;		/* scratch: metadata JSON text */
	int64		last_position;
	int32		count;			/* events encoded */
	int32		max_count;
} EsPbBatch;

/* Bytes a varint takes */
static int
es_pb_varint_size(uint64 v)
{
	int			n = 1;

	while (v >= 0x80)
	{
		v >>= 7;
		n++;
	}
	return n;
}

/* Write a varint at *p; the caller reserved the room */
static inline void
es_pb_put_varint(char **p, uint64 v)
{
	while (v >= 0x80)
	{
		*(*p)++ = (char) (v | 0x80);
		v >>= 7;
	}
	*(*p)++ = (char) v;
}

/* Size of a varint field (0 when omitted) */
static size_t
es_pb_varint_field_size(uint64 v)
{
	return v == 0 ? 0 : 1 + es_pb_varint_size(v);
}

/* Size of a length-delimited field (0 when omitted) */
static size_t
es_pb_bytes_field_size(size_t len)
{
	return len == 0 ? 0 : 1 + es_pb_varint_size(len) + len;
}

/* Write a varint field unless it is 0 */
static inline void
es_pb_put_varint_field(char **p, int field, uint64 v)
{
	if (v == 0)
		return;
	es_pb_put_varint(p, ((uint64) field << 3) | ES_PBWIRE_VARINT);
	es_pb_put_varint(p, v);
}

/* Write a length-delimited field unless it is empty */
static inline void
es_pb_put_bytes_field(char **p, int field, const char *data, size_t len)
{
	if (len == 0)
		return;
	es_pb_put_varint(p, ((uint64) field << 3) | ES_PBWIRE_LEN);
	es_pb_put_varint(p, len);
	memcpy(*p, data, len);
	*p += len;
}

/* JSON text of a jsonb column into a scratch buffer */
static void
es_pb_json_text(StringInfo out, Datum jsonb)
{
	Jsonb	   *jb = DatumGetJsonbP(jsonb);

	resetStringInfo(out);
	(void) JsonbToCString(out, &jb->root, VARSIZE(jb));
}

/* The canonical text form of a uuid */
static void
es_pb_uuid_text(const pg_uuid_t *u, char *out)
{
	static const char hex[] = "0123456789abcdef";
	int			j = 0;

	for (int i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[j++] = '-';
		out[j++] = hex[u->data[i] >> 4];
		out[j++] = hex[u->data[i] & 0x0F];
	}
}

/*
 * After the first event: make room for max_count events of its size, so
 * the buffer is not grown (and copied) a dozen times on the way.
 */
static void
es_pb_presize(EsPbBatch *batch, size_t event_size)
{
	double		want = (double) (event_size + ES_PB_MAX_FIELD_HEAD) * batch->max_count;

	want = Min(want, ES_PB_PRESIZE_MAX);
	if (want > batch->buf.maxlen)
		enlargeStringInfo(&batch->buf, (int) want - batch->buf.len);
}

/* Encode one feed row (a slot of the events table) as EventBatch.events */
static void
es_pb_put_event(TupleTableSlot *slot, void *arg)
{
	EsPbBatch  *batch = (EsPbBatch *) arg;
	Datum	   *v = slot->tts_values;
	bool	   *isnull = slot->tts_isnull;
	text	   *type = DatumGetTextPP(v[Anum_es_events_entity_type - 1]);
	text	   *id = DatumGetTextPP(v[Anum_es_events_entity_id - 1]);
	text	   *event_type = DatumGetTextPP(v[Anum_es_events_event_type - 1]);
	bool		binary = isnull[Anum_es_events_payload - 1];
	bytea	   *bin = binary ? DatumGetByteaPP(v[Anum_es_events_payload_bytes - 1]) : NULL;
	const char *payload;
	size_t		payload_len;
	size_t		meta_len = 0;
	char		uuid[ES_PB_UUID_TEXT_LEN];
	size_t		uuid_len = isnull[Anum_es_events_event_id - 1] ? 0 : ES_PB_UUID_TEXT_LEN;
	uint64		position = (uint64) DatumGetInt64(v[Anum_es_events_position - 1]);
	uint64		seq_no = (uint64) DatumGetInt64(v[Anum_es_events_seq_no - 1]);
	uint64		recorded = (uint64) (DatumGetTimestampTz(v[Anum_es_events_recorded_at - 1]) +
									 ES_UNIX_EPOCH_OFFSET_US);
	size_t		size;
	char	   *p;

	if (binary)
	{
		payload = VARDATA_ANY(bin);
		payload_len = VARSIZE_ANY_EXHDR(bin);
	}
	else
	{
		es_pb_json_text(&batch->json, v[Anum_es_events_payload - 1]);
		payload = batch->json.data;
		payload_len = batch->json.len;
	}
	if (!isnull[Anum_es_events_metadata - 1])
	{
		es_pb_json_text(&batch->meta, v[Anum_es_events_metadata - 1]);
		meta_len = batch->meta.len;
	}
	if (uuid_len)
		es_pb_uuid_text(DatumGetUUIDP(v[Anum_es_events_event_id - 1]), uuid);

	size = es_pb_varint_field_size(position) +
		es_pb_bytes_field_size(VARSIZE_ANY_EXHDR(type)) +
		es_pb_bytes_field_size(VARSIZE_ANY_EXHDR(id)) +
		es_pb_varint_field_size(seq_no) +
		es_pb_bytes_field_size(VARSIZE_ANY_EXHDR(event_type)) +
		es_pb_bytes_field_size(payload_len) +
		es_pb_varint_field_size(binary ? 1 : 0) +
		es_pb_bytes_field_size(meta_len) +
		es_pb_bytes_field_size(uuid_len) +
		es_pb_varint_field_size(recorded);
	if ((size_t) batch->buf.len + size + ES_PB_MAX_FIELD_HEAD > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("EventBatch would exceed %zu bytes", (size_t) MaxAllocSize),
				 errhint("Ask for fewer events (max_count).")));

	enlargeStringInfo(&batch->buf, size + ES_PB_MAX_FIELD_HEAD);
	p = batch->buf.data + batch->buf.len;
	es_pb_put_varint(&p, ((uint64) ES_PBWIRE_FIELD_EVENTS << 3) | ES_PBWIRE_LEN);
	es_pb_put_varint(&p, size);
	es_pb_put_varint_field(&p, 1, position);
	es_pb_put_bytes_field(&p, 2, VARDATA_ANY(type), VARSIZE_ANY_EXHDR(type));
	es_pb_put_bytes_field(&p, 3, VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id));
	es_pb_put_varint_field(&p, 4, seq_no);
	es_pb_put_bytes_field(&p, 5, VARDATA_ANY(event_type), VARSIZE_ANY_EXHDR(event_type));
	es_pb_put_bytes_field(&p, 6, payload, payload_len);
	es_pb_put_varint_field(&p, 7, binary ? 1 : 0);
	es_pb_put_bytes_field(&p, 8, batch->meta.data, meta_len);
	es_pb_put_bytes_field(&p, 9, uuid, uuid_len);
	es_pb_put_varint_field(&p, 10, recorded);
	batch->buf.len = p - batch->buf.data;
	if (++batch->count == 1)
		es_pb_presize(batch, size);
}

/* The feed request as one EventBatch */
static bytea *
es_pb_feed(const EsFeedRequest *req)
{
	EsPbBatch	batch;
	bytea	   *out;
	char	   *p;

	es_check_select(es_catalog()->events);
	initStringInfo(&batch.buf);
	initStringInfo(&batch.json);
	initStringInfo(&batch.meta);
	appendStringInfoSpaces(&batch.buf, VARHDRSZ);
	batch.count = 0;
	batch.max_count = req->max_count;
	(void) es_feed_scan(req, es_pb_put_event, &batch, &batch.last_position);
	enlargeStringInfo(&batch.buf, ES_PB_MAX_FIELD_HEAD);
	p = batch.buf.data + batch.buf.len;
	es_pb_put_varint_field(&p, 2, (uint64) batch.last_position);
	batch.buf.len = p - batch.buf.data;
	out = (bytea *) batch.buf.data;
	SET_VARSIZE(out, batch.buf.len);
	return out;
}

PG_FUNCTION_INFO_V1(eventsourced_events_by_type_pb);

/* events_by_type_pb(entity_type, after_position, max_count): one EventBatch */
Datum
eventsourced_events_by_type_pb(PG_FUNCTION_ARGS)
{
	EsFeedRequest req;

	es_pb_require_utf8("events_by_type_pb");
	es_feed_args(fcinfo, true, &req);
	PG_RETURN_BYTEA_P(es_pb_feed(&req));
}

PG_FUNCTION_INFO_V1(eventsourced_read_all_pb);

/* read_all_pb(after_position, max_count): one EventBatch */
Datum
eventsourced_read_all_pb(PG_FUNCTION_ARGS)
{
	EsFeedRequest req;

	es_pb_require_utf8("read_all_pb");
	es_feed_args(fcinfo, false, &req);
	PG_RETURN_BYTEA_P(es_pb_feed(&req));
}

PG_FUNCTION_INFO_V1(eventsourced_load_snapshot_pb);

/* load_snapshot_pb(entity_type, entity_id): a Snapshot message, or NULL */
Datum
eventsourced_load_snapshot_pb(PG_FUNCTION_ARGS)
{
	EsEntity	entity;
	Eventsourced__Snapshot snap = EVENTSOURCED__SNAPSHOT__INIT;
	int64		seq_no;
	Datum		state;
	bool		binary;

	es_pb_require_utf8("load_snapshot_pb");
	entity = es_entity_arg(fcinfo, 0, 1);
	if (!es_fetch_snapshot_as_caller(&entity, &seq_no, &state, &binary))
		PG_RETURN_NULL();
	snap.seq_no = (uint64) seq_no;
	if (binary)
	{
		snap.state.len = VARSIZE_ANY_EXHDR(DatumGetByteaPP(state));
		snap.state.data = (uint8 *) VARDATA_ANY(DatumGetByteaPP(state));
	}
	else
		snap.state = es_pb_json_bytes(state);
	PG_RETURN_BYTEA_P(es_pb_pack(&snap.base));
}
