/*
 * fuzz_pbjson.c
 *		Fuzz pb_to_json: the input is a payload, decoded against the fixed
 *		test schema (proto/pbtest.proto, proto/pbtest2.proto) embedded as
 *		schema.h by the Makefile.
 *
 * Checks beyond the sanitizers: success yields exactly one valid JSON
 * value; failure leaves the buffer as it was and says why; all temporary
 * memory is returned.
 */
#include "common.h"
#include "schema.h"

static PbSchema *schema;

/* Load the embedded test schema once */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char		err[256];

	(void) argc;
	(void) argv;
	if (pb_schema_add(&schema, pbtest_schema, sizeof(pbtest_schema),
					  &counting_allocator, err, sizeof(err)) != 0)
		fail("loading the test schema", err);
	return 0;
}

/* Decode data as one message type and check the invariants */
static void
decode_as(const char *type, const uint8_t *data, size_t size)
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
		fail("memory leak", type);
}

/* libFuzzer entry point */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	decode_as("pbtest.Test", data, size);
	decode_as("pbtest2.Legacy", data, size);
	return 0;
}
