/*
 * fuzz_descriptor.c
 *		Fuzz pb_schema_add: the input is a serialized FileDescriptorSet.
 *		When it loads, every message type it defines decodes a few fixed
 *		payloads and the input itself; the set is then added a second time
 *		(every type a duplicate) and the schema freed.
 *
 * Checks: no leaks (counting allocator), valid JSON on success.
 */
#include "common.h"

/* A payload touching every wire type, with a nested length-delimited run */
static const uint8_t mixed_payload[] = {
	0x08, 0x96, 0x01,			/* 1: varint 150 */
	0x11, 1, 2, 3, 4, 5, 6, 7, 8,	/* 2: fixed64 */
	0x1a, 0x03, 0x08, 0x01, 0x10,	/* 3: bytes "\x08\x01\x10" */
	0x25, 0x00, 0x00, 0x80, 0x3f,	/* 4: fixed32 (1.0f) */
	0x2a, 0x02, 0x61, 0x62,		/* 5: "ab" */
	0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,	/* 6: -1 */
	0x0a, 0x00,					/* 1 again, as length-delimited */
};

/* Decode one payload as a type, checking the invariants */
static void
decode_as(const PbSchema *schema, const char *type, const uint8_t *data,
		  size_t size)
{
	PbBuf		out;
	char		err[256] = "";
	long		before = live_allocs;

	pb_buf_init(&out, &counting_allocator);
	if (pb_to_json(schema, type, data, size, &out, err, sizeof(err)) == 0)
	{
		if (!json_valid(&out))
			fail("invalid JSON", out.data);
	}
	else if (err[0] == '\0' || out.len != 0)
		fail("error without a message or with output", err);
	pb_buf_free(&out);
	if (live_allocs != before)
		fail("memory leak in pb_to_json", type);
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
	PbSchema   *schema = NULL;
	char		err[256] = "";
	size_t		i,
				n;
	const char *name;

	if (pb_schema_add(&schema, data, size, &counting_allocator, err, sizeof(err)) != 0)
	{
		if (schema != NULL || err[0] == '\0')
			fail("failed add left a schema or no message", err);
		if (live_allocs != 0)
			fail("memory leak in failed pb_schema_add", err);
		return 0;
	}
	n = pb_schema_message_count(schema);
	for (i = 0; i < n; i++)
	{
		name = pb_schema_message_name(schema, i);
		if (name == NULL || !pb_schema_has_message(schema, name))
			fail("listed type not found", name);
		decode_as(schema, name, (const uint8_t *) "", 0);
		decode_as(schema, name, mixed_payload, sizeof(mixed_payload));
		decode_as(schema, name, data, size < 512 ? size : 512);
	}
	if (pb_schema_add(&schema, data, size, &counting_allocator, err, sizeof(err)) != 0)
		fail("adding a loaded set again failed", err);
	if (pb_schema_message_count(schema) != n)
		fail("duplicates changed the listing", NULL);
	pb_schema_free(schema);
	if (live_allocs != 0)
		fail("memory leak in pb_schema_free", NULL);
	return 0;
}
