/*
 * fuzz_batch.c
 *		Fuzz protobuf-c's generated eventsourced.EventBatch decoder the way
 *		the extension uses it: unpack with a counting allocator, walk every
 *		event's fields (strings NUL-terminated, byte lengths readable),
 *		re-pack and compare sizes, free, and check nothing leaked.
 */
#include "common.h"
#include "eventsourced.pb-c.h"

/* ProtobufCAllocator over the counting allocator */
static void *
pc_alloc(void *ctx, size_t n)
{
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

/* Nothing to set up */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	return 0;
}

/* libFuzzer entry point */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Eventsourced__EventBatch *batch;
	size_t		i;

	batch = eventsourced__event_batch__unpack(&batch_allocator, size, data);
	if (batch != NULL)
	{
		if (batch->n_events > 0 && batch->events == NULL)
			fail("events count without events", NULL);
		for (i = 0; i < batch->n_events; i++)
			walk_event(batch->events[i]);
		sink += batch->last_position;
		repack(batch);
		eventsourced__event_batch__free_unpacked(batch, &batch_allocator);
	}
	if (live_allocs != 0)
		fail("memory leak in EventBatch unpack/free", NULL);
	return 0;
}
