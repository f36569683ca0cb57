/*
 * fuzz_batch.c
 *		Fuzz the extension's pre-check of an EventBatch (src/pbwire.c) and
 *		protobuf-c's generated eventsourced.EventBatch decoder the way the
 *		extension uses them: every input goes through the pre-check first;
 *		then it is unpacked with a counting allocator (also when the
 *		pre-check refuses it, to fuzz protobuf-c on anything), every event's
 *		fields are walked (strings NUL-terminated, byte lengths readable),
 *		the batch re-packed and sizes compared, freed, and nothing may leak.
 *
 * Checked on every input:
 *	- the pre-check's result (fault, byte, field, event, count) equals that
 *	  of ref_check_batch, an independent reading of the wire format: so a
 *	  refusal for a NUL byte names a string field that holds one;
 *	- protobuf-c asks for at most ES_PBWIRE_UNPACK_BOUND(size) bytes in all
 *	  (the bound README relies on; derivation below);
 * and when the pre-check accepts and protobuf-c decodes the input:
 *	- the pre-check's count is n_events;
 *	- every string field of every event is exactly as long as its last
 *	  occurrence on the wire (no NUL truncation);
 * and when it refuses for a NUL byte in the last occurrence of a field that
 * protobuf-c decodes, the decoded string is shorter than on the wire.
 *
 * The bound (protobuf-c 1.4/1.5, 64-bit).  Unpacking n bytes requests:
 *	- 48 bytes for the EventBatch;
 *	- per message (the batch, each Event) of m fields, scan slots beyond the
 *	  16 on the stack: slabs of 32-byte ScannedMembers doubling from 32
 *	  slots, together at most 64 * (m - 1) bytes, so 64 a field;
 *	- per field 1 of any wire type 0/1/2/5, an 8-byte pointer in events[];
 *	- per event decoded, a 120-byte Eventsourced__Event;
 *	- per unknown field, a 24-byte ProtobufCMessageUnknownField and a copy
 *	  of its value (its bytes minus the key);
 *	- per string or bytes field occurrence, its length + 1 at most (every
 *	  occurrence, also those a later one replaces).
 * Every field takes at least 2 bytes (key, value).  An unknown field of b
 * bytes costs at most 64 + 24 + b - 1 <= 44.5 b; an event of b bytes at
 * most 64 + 8 + 120 = 192 for itself plus 44.5 a byte of its b - 2 bytes
 * of fields, <= 96 b.  Hence at most 48 + 96 n, whether or not the unpack
 * succeeds (it stops at the first field it cannot parse); a run of empty
 * events ("0a00" repeated 16 * (2^k - 1) + 1 times) needs 48 + 96 n - 64
 * (corpus/fuzz_batch/hex_empty_events_1009).
 * The pre-check's 100,000-event limit keeps the 96-a-byte part under
 * 19.2 MB; past it, unknown fields cost at most 44.5 a byte.
 */
#include "common.h"
#include "eventsourced.pb-c.h"
#include "pbwire.h"

/* Bytes requested from the allocator since the last reset */
static size_t alloc_bytes;
/* Largest (bytes - 48) / size seen on an accepted input (FUZZ_BATCH_STATS) */
static double worst_ratio;
static size_t worst_size;

/* ProtobufCAllocator over the counting allocator, adding up the bytes */
static void *
pc_alloc(void *ctx, size_t n)
{
	alloc_bytes += n;
	return count_alloc(ctx, n);
}

/* ProtobufCAllocator free over the counting allocator */
static void
pc_free(void *ctx, void *p)
{
	count_free(ctx, p);
}

static ProtobufCAllocator batch_allocator = {pc_alloc, pc_free, NULL};

static volatile size_t sink;

/* Touch every byte of a string (ASan catches a missing terminator) */
static void
walk_string(const char *s)
{
	if (s == NULL)
		fail("NULL string field", NULL);
	sink += strlen(s);
}

/* Touch every byte of a bytes field */
static void
walk_bytes(const ProtobufCBinaryData *b)
{
	size_t		i;

	if (b->len > 0 && b->data == NULL)
		fail("bytes field with length but no data", NULL);
	for (i = 0; i < b->len; i++)
		sink += b->data[i];
}

/* Walk one event as the extension's import path does */
static void
walk_event(const Eventsourced__Event *e)
{
	if (e == NULL)
		fail("NULL event", NULL);
	walk_string(e->entity_type);
	walk_string(e->entity_id);
	walk_string(e->event_type);
	walk_string(e->event_id);
	walk_bytes(&e->payload);
	walk_bytes(&e->metadata);
	sink += e->position + e->seq_no + (size_t) e->recorded_at +
		(size_t) e->payload_format;
}

/* Pack the batch again and check protobuf-c agrees with itself */
static void
repack(const Eventsourced__EventBatch *batch)
{
	size_t		size = eventsourced__event_batch__get_packed_size(batch);
	uint8_t    *buf = malloc(size ? size : 1);

	if (buf == NULL)
		return;
	if (eventsourced__event_batch__pack(batch, buf) != size)
		fail("pack size differs from get_packed_size", NULL);
	free(buf);
}

/*
 * An independent reading of the wire format to check pbwire.c against,
 * written differently on purpose: pointers, one whole field at a time.
 */
typedef enum RefStatus
{
	REF_OK, REF_BAD_KEY, REF_BAD_VALUE
} RefStatus;

typedef struct RefField
{
	uint64_t	number;
	int			wire;
	const uint8_t *value;		/* wire type 2: the payload */
	size_t		len;
} RefField;

/* A varint: find its last byte, then assemble it backwards */
static bool
ref_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	const uint8_t *last = *p;
	const uint8_t *q;

	while (last < end && last - *p < 10 && (*last & 0x80))
		last++;
	if (last >= end || last - *p >= 10)
		return false;
	*v = 0;
	for (q = last + 1; q > *p; q--)
		*v = (*v << 7) | (q[-1] & 0x7F);
	*p = last + 1;
	return true;
}

/* One field: its key, then its value */
static RefStatus
ref_field(const uint8_t **p, const uint8_t *end, RefField *f)
{
	uint64_t	key,
				n;

	if (!ref_varint(p, end, &key))
		return REF_BAD_KEY;
	f->number = key >> 3;
	f->wire = (int) (key & 7);
	if (f->wire == 0)
		return ref_varint(p, end, &n) ? REF_OK : REF_BAD_VALUE;
	if (f->wire == 1 || f->wire == 5)
		n = f->wire == 1 ? 8 : 4;
	else if (f->wire != 2 || !ref_varint(p, end, &n))
		return REF_BAD_VALUE;
	if (n > (uint64_t) (end - *p))
		return REF_BAD_VALUE;
	f->value = *p;
	f->len = (size_t) n;
	*p += n;
	return REF_OK;
}

/* Whether Event field number is a string: entity_type, entity_id, event_type, event_id */
static bool
ref_string_field(uint64_t number)
{
	return number == 2 || number == 3 || number == 5 || number == 9;
}

/* Whether a field's value has a NUL byte */
static bool
ref_has_nul(const RefField *f)
{
	size_t		i;

	for (i = 0; i < f->len; i++)
		if (f->value[i] == 0)
			return true;
	return false;
}

/* What the pre-check should say of one Event */
static EsPbWireError
ref_check_event(const uint8_t *ev, size_t len, size_t *offset, uint64_t *number)
{
	const uint8_t *p = ev;
	RefField	f;
	RefStatus	st;

	while (p < ev + len)
	{
		*offset = (size_t) (p - ev);
		*number = 0;
		st = ref_field(&p, ev + len, &f);
		if (st == REF_BAD_KEY)
			return ES_PBWIRE_EVENT_BAD_KEY;
		*number = f.number;
		if (st == REF_BAD_VALUE)
			return ES_PBWIRE_EVENT_TRUNCATED;
		if (f.wire == 2 && ref_string_field(f.number) && ref_has_nul(&f))
			return ES_PBWIRE_EVENT_NUL;
	}
	return ES_PBWIRE_OK;
}

/* What the pre-check should say of a batch */
static EsPbWireResult
ref_check_batch(const uint8_t *data, size_t size)
{
	EsPbWireResult r = {ES_PBWIRE_OK, 0, 0, 0, 0};
	const uint8_t *p = data;
	RefField	f;
	RefStatus	st;

	while (p < data + size)
	{
		size_t		at = (size_t) (p - data);

		st = ref_field(&p, data + size, &f);
		r.offset = at;
		if (st == REF_BAD_KEY || f.number == 0)
		{
			r.error = ES_PBWIRE_BAD_KEY;
			r.field = 0;
			r.event = 0;
			return r;
		}
		r.field = f.number;
		if (f.number == 1 && f.wire == 2)
		{
			r.event = ++r.nevents;
			if (r.nevents > ES_PBWIRE_MAX_EVENTS)
			{
				r.error = ES_PBWIRE_TOO_MANY_EVENTS;
				return r;
			}
			if (st == REF_OK &&
				(r.error = ref_check_event(f.value, f.len, &r.offset, &r.field)) != ES_PBWIRE_OK)
				return r;
		}
		if (st == REF_BAD_VALUE)
		{
			r.error = ES_PBWIRE_BAD_FIELD;
			r.event = 0;
			return r;
		}
	}
	r.offset = 0;
	r.field = 0;
	r.event = 0;
	return r;
}

/* An event's string field by number */
static const char *
event_string(const Eventsourced__Event *e, uint64_t number)
{
	switch (number)
	{
		case 2:
			return e->entity_type;
		case 3:
			return e->entity_id;
		case 5:
			return e->event_type;
		default:
			return e->event_id;
	}
}

/*
 * Compare each decoded event's string fields with the last occurrence of
 * each on the wire: the same length when want_nul is 0 (none may be cut at
 * a NUL), else shorter for field want_nul of event want_event when that last
 * occurrence holds a NUL.
 */
static void
check_strings(const uint8_t *data, size_t size,
			  const Eventsourced__EventBatch *batch,
			  int want_event, uint64_t want_nul)
{
	static const uint64_t numbers[] = {2, 3, 5, 9};
	const uint8_t *p = data;
	RefField	f;
	size_t		k = 0;

	while (p < data + size && ref_field(&p, data + size, &f) == REF_OK)
	{
		const uint8_t *q;
		RefField	g;
		size_t		i;

		if (f.number != 1)
			continue;
		if (k >= batch->n_events)
			fail("more events on the wire than decoded", NULL);
		for (i = 0; i < 4; i++)
		{
			RefField	last = {0, 2, NULL, 0};
			size_t		decoded = strlen(event_string(batch->events[k], numbers[i]));

			for (q = f.value; q < f.value + f.len && ref_field(&q, f.value + f.len, &g) == REF_OK;)
				if (g.number == numbers[i])
					last = g;
			if (want_event == (int) k + 1 && want_nul == numbers[i] && ref_has_nul(&last))
			{
				if (decoded >= last.len)
					fail("refused for a NUL byte that protobuf-c keeps", NULL);
			}
			else if (want_nul == 0 && decoded != last.len)
				fail("a string field decoded shorter than on the wire", NULL);
		}
		k++;
	}
}

/*
 * The event limit, beyond -max_len: ES_PBWIRE_MAX_EVENTS empty events pass
 * (and go through every check), one more is refused at its key.
 */
static void
check_event_limit(void)
{
	size_t		n = 2 * ((size_t) ES_PBWIRE_MAX_EVENTS + 1);
	uint8_t    *buf = malloc(n);
	EsPbWireResult res;
	size_t		i;

	if (buf == NULL)
		fail("out of memory", NULL);
	for (i = 0; i < n; i += 2)
	{
		buf[i] = 0x0a;
		buf[i + 1] = 0x00;
	}
	res = es_pbwire_check_batch(buf, n - 2);
	if (res.error != ES_PBWIRE_OK || res.nevents != ES_PBWIRE_MAX_EVENTS)
		fail("the largest batch allowed is refused", NULL);
	res = es_pbwire_check_batch(buf, n);
	if (res.error != ES_PBWIRE_TOO_MANY_EVENTS || res.offset != n - 2 ||
		res.event != ES_PBWIRE_MAX_EVENTS + 1)
		fail("one event too many is not refused", NULL);
	LLVMFuzzerTestOneInput(buf, n - 2);
	LLVMFuzzerTestOneInput(buf, n);
	free(buf);
}

/* Check the sizes the bound in the header comment is worked out from */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	if (sizeof(Eventsourced__EventBatch) > 48 ||
		sizeof(Eventsourced__Event) + sizeof(void *) + 64 > 2 * 96 ||
		sizeof(ProtobufCMessageUnknownField) + 64 + 1 > 2 * 96)
		fail("struct sizes exceed those ES_PBWIRE_UNPACK_BOUND assumes", NULL);
	check_event_limit();
	return 0;
}

/* With FUZZ_BATCH_STATS set: the closest an accepted input came to the bound */
static void
print_stats(void)
{
	fprintf(stderr, "fuzz_batch: worst accepted input: 48 + %.2f bytes a byte (%zu bytes)\n",
			worst_ratio, worst_size);
}

/* libFuzzer entry point */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool stats_registered;
	Eventsourced__EventBatch *batch;
	EsPbWireResult res = es_pbwire_check_batch(data, size);
	EsPbWireResult ref = ref_check_batch(data, size);
	size_t		i;

	if (!stats_registered && getenv("FUZZ_BATCH_STATS") != NULL)
		atexit(print_stats);
	stats_registered = true;
	if (res.error != ref.error || res.offset != ref.offset ||
		res.field != ref.field || res.event != ref.event ||
		res.nevents != ref.nevents)
	{
		char		detail[200];

		snprintf(detail, sizeof(detail),
				 "pbwire %d@%zu field %llu event %d count %d, reference %d@%zu field %llu event %d count %d",
				 (int) res.error, res.offset, (unsigned long long) res.field, res.event, res.nevents,
				 (int) ref.error, ref.offset, (unsigned long long) ref.field, ref.event, ref.nevents);
		fail("pre-check differs from the reference reading", detail);
	}

	alloc_bytes = 0;
	batch = eventsourced__event_batch__unpack(&batch_allocator, size, data);
	if (alloc_bytes > ES_PBWIRE_UNPACK_BOUND(size))
	{
		char		detail[100];

		snprintf(detail, sizeof(detail), "%zu bytes for %zu input bytes", alloc_bytes, size);
		fail("protobuf-c allocated more than ES_PBWIRE_UNPACK_BOUND", detail);
	}
	if (res.error == ES_PBWIRE_OK && size > 0 &&
		(double) (alloc_bytes - 48) / size > worst_ratio)
	{
		worst_ratio = (double) (alloc_bytes - 48) / size;
		worst_size = size;
	}
	if (batch != NULL)
	{
		if (batch->n_events > 0 && batch->events == NULL)
			fail("events count without events", NULL);
		if (res.error == ES_PBWIRE_OK && batch->n_events != (size_t) res.nevents)
			fail("pre-check's event count differs from n_events", NULL);
		for (i = 0; i < batch->n_events; i++)
			walk_event(batch->events[i]);
		if (res.error == ES_PBWIRE_OK)
			check_strings(data, size, batch, 0, 0);
		else if (res.error == ES_PBWIRE_EVENT_NUL)
			check_strings(data, size, batch, res.event, res.field);
		sink += batch->last_position;
		repack(batch);
		eventsourced__event_batch__free_unpacked(batch, &batch_allocator);
	}
	if (live_allocs != 0)
		fail("memory leak in EventBatch unpack/free", NULL);
	return 0;
}
