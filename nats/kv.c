/*-------------------------------------------------------------------------
 *
 * kv.c
 *		Snapshots into NATS KV, as the Rust library's NatsSnapshotStore
 *		reads them.
 *
 * One bucket per entity type, snapshots_<type> (escaped, subject.c),
 * created when missing (history 1, file storage), and bound once per run.
 * The key is the entity id (escaped), the value a protobuf Snapshot
 * { uint64 seq_no = 1; bytes state = 2; } whose seq_no is the stream
 * sequence of the event the snapshot covers.  A put replaces the key's
 * value, so putting the same snapshot again (after a crash) is harmless.
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

#define BUCKET_PREFIX			"snapshots_"
/* A protobuf varint takes at most 10 bytes. */
#define VARINT_MAX_BYTES		10
/* Snapshot's field keys: field 1 varint, field 2 length-delimited. */
#define SNAPSHOT_SEQ_NO_KEY		0x08
#define SNAPSHOT_STATE_KEY		0x12
/* Bytes "$KV." and the dot after the bucket add to a key's subject. */
#define KV_SUBJECT_OVERHEAD		5

/* Appends a protobuf varint; returns the bytes written. */
static size_t
put_varint(unsigned char *out, uint64_t v)
{
	size_t		n = 0;

	do
	{
		out[n++] = (unsigned char) ((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
		v >>= 7;
	} while (v > 0);
	return n;
}

/* The bytes of a protobuf varint. */
static size_t
varint_size(uint64_t v)
{
	size_t		n = 1;

	while (v > 0x7F)
	{
		v >>= 7;
		n++;
	}
	return n;
}

/* The size of Snapshot { seq_no, state } encoded (encode_snapshot). */
static size_t
snapshot_size(uint64_t seq_no, size_t state_len)
{
	return 2 + varint_size(seq_no) + varint_size((uint64_t) state_len) + state_len;
}

/* Encodes Snapshot { seq_no, state } into a new buffer; its size in *len. */
static unsigned char *
encode_snapshot(uint64_t seq_no, const char *state, int state_len, size_t *len)
{
	unsigned char *buf = malloc(2 + 2 * VARINT_MAX_BYTES + (size_t) state_len);
	size_t		n = 0;

	if (buf == NULL)
		return NULL;
	buf[n++] = SNAPSHOT_SEQ_NO_KEY;
	n += put_varint(buf + n, seq_no);
	buf[n++] = SNAPSHOT_STATE_KEY;
	n += put_varint(buf + n, (uint64_t) state_len);
	memcpy(buf + n, state, state_len);
	*len = n + (size_t) state_len;
	return buf;
}

/* How many snapshots_* buckets (streams KV_snapshots_*) the account has; -1 on failure. */
static int
count_buckets(Relay *r)
{
	jsStreamNamesList *list = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s = js_StreamNames(&list, r->stream.js, NULL, &jerr);
	int			n = 0;

	if (s == NATS_NOT_FOUND)
		return 0;
	if (s != NATS_OK)
	{
		fprintf(stderr, PROGRAM_NAME ": cannot list the streams: %s\n", natsStatus_GetText(s));
		return -1;
	}
	for (int i = 0; i < list->Count; i++)
		if (strncmp(list->List[i], "KV_" BUCKET_PREFIX, strlen("KV_" BUCKET_PREFIX)) == 0)
			n++;
	jsStreamNamesList_Destroy(list);
	return n;
}

/*
 * Binds to the bucket, creating it when missing unless --max-buckets
 * snapshot buckets exist already (*capped is set then: any role that saves
 * snapshots could otherwise make the relay create streams without end).
 * NULL on failure or when capped.
 */
static kvStore *
open_bucket(Relay *r, const char *name, bool *capped)
{
	kvStore    *kv = NULL;
	natsStatus	s = js_KeyValue(&kv, r->stream.js, name);
	kvConfig	cfg;
	int			existing;

	*capped = false;
	if (s == NATS_NOT_FOUND)
	{
		existing = count_buckets(r);
		if (existing < 0)
			return NULL;
		if (existing >= r->opt.max_buckets)
		{
			*capped = true;
			return NULL;
		}
		kvConfig_Init(&cfg);
		cfg.Bucket = name;
		cfg.History = 1;
		cfg.StorageType = js_FileStorage;
		s = js_CreateKeyValue(&kv, r->stream.js, &cfg);
		if (s == NATS_OK)
			fprintf(stderr, PROGRAM_NAME ": created KV bucket \"%s\"\n", name);
	}
	if (s != NATS_OK)
	{
		fprintf(stderr, PROGRAM_NAME ": cannot find or create KV bucket \"%s\": %s (%s)\n",
				name, natsStatus_GetText(s), nats_GetLastError(NULL));
		return NULL;
	}
	return kv;
}

/* The bucket name of an entity type (malloc'ed): snapshots_<escaped type>. */
static char *
bucket_name(const char *type, int type_len)
{
	char	   *escaped = escape_bucket(type, type_len);
	size_t		size = strlen(BUCKET_PREFIX) + strlen(escaped) + 1;
	char	   *name = malloc(size);

	snprintf(name, size, "%s%s", BUCKET_PREFIX, escaped);
	free(escaped);
	return name;
}

/*
 * The bound bucket of that name (bound on first use); NULL on failure.  A
 * bucket --max-buckets kept from being created is remembered for the run
 * (its kv NULL): that type's snapshots are skipped.
 */
static Bucket *
bucket_of(Relay *r, const char *name)
{
	Bucket	   *b;
	bool		capped;

	for (b = r->buckets; b != NULL; b = b->next)
		if (strcmp(b->name, name) == 0)
			return b;
	b = calloc(1, sizeof(Bucket));
	if (b == NULL)
		return NULL;
	b->kv = open_bucket(r, name, &capped);
	if (b->kv == NULL && !capped)
	{
		free(b);
		return NULL;
	}
	b->name = strdup(name);
	b->next = r->buckets;
	r->buckets = b;
	return b;
}

/* Unbinds every bucket (at exit). */
void
kv_close(Relay *r)
{
	while (r->buckets)
	{
		Bucket	   *b = r->buckets;

		r->buckets = b->next;
		if (b->kv != NULL)
			kvStore_Destroy(b->kv);
		free(b->name);
		free(b);
	}
}

/*
 * Whether the snapshot fits NATS: a bucket name JetStream takes (its
 * stream is KV_<bucket>), a subject within the control line, a value
 * within max_payload.  One that does not is skipped (reported): the bucket
 * keeps the entity's previous snapshot, older but still correct.
 */
static bool
fits(const Relay *r, const char *bucket, const char *key, uint64_t stream_seq, size_t state_len,
	 int64_t change)
{
	size_t		subject_len = strlen(bucket) + strlen(key) + KV_SUBJECT_OVERHEAD;
	size_t		value_len = snapshot_size(stream_seq, state_len);
	const char *what = NULL;
	size_t		size = 0;
	long long	limit = 0;

	if (strlen(bucket) + strlen("KV_") > MAX_STREAM_NAME)
		what = "bucket's name", size = strlen(bucket), limit = MAX_STREAM_NAME - strlen("KV_");
	else if (subject_len > MAX_SUBJECT_BYTES)
		what = "key's subject", size = subject_len, limit = MAX_SUBJECT_BYTES;
	else if ((int64_t) value_len > r->stream.max_payload)
		what = "value", size = value_len, limit = r->stream.max_payload;
	if (what == NULL)
		return true;
	fprintf(stderr, PROGRAM_NAME ": skipping snapshot change %lld: its %s takes %zu bytes, more"
			" than the %lld NATS allows; the bucket keeps the entity's previous snapshot\n",
			(long long) change, what, size, limit);
	return false;
}

/*
 * Whether JetStream refused a put for a reason that the same put meets
 * again: a value larger than the bucket's maximum, a full bucket (discard
 * new), the account's or server's limits.
 */
static bool
refused_for_good(jsErrCode jerr)
{
	return jerr == JSStreamMessageExceedsMaximumErr || jerr == JSStreamStoreFailedErr ||
		jerr == JSAccountResourcesExceededErr || jerr == JSInsufficientResourcesErr ||
		jerr == JSMemoryResourcesExceededErr || jerr == JSStorageResourcesExceededErr;
}

/*
 * Puts the value under $KV.<bucket>.<key> (what kvStore_Put publishes),
 * keeping JetStream's error code.  A put refused for good is skipped with
 * a message naming the change and the reason (the bucket keeps the
 * entity's previous snapshot, as for one too large for NATS): retrying it
 * would hold up every later snapshot change forever.
 */
static Outcome
put_value(Relay *r, const char *bucket, const char *key, const unsigned char *value, size_t len,
		  int64_t change)
{
	size_t		size = strlen(bucket) + strlen(key) + KV_SUBJECT_OVERHEAD + 1;
	char	   *subject = malloc(size);
	jsPubAck   *pa = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s = NATS_NO_MEMORY;

	if (subject != NULL)
	{
		snprintf(subject, size, "$KV.%s.%s", bucket, key);
		s = js_Publish(&pa, r->stream.js, subject, value, (int) len, NULL, &jerr);
	}
	jsPubAck_Destroy(pa);
	free(subject);
	if (s == NATS_OK)
		return OUTCOME_OK;
	if (refused_for_good(jerr))
	{
		fprintf(stderr, PROGRAM_NAME ": skipping snapshot change %lld: KV bucket \"%s\" refused"
				" its value of %zu bytes for good: %s (JetStream error %d); the bucket keeps the"
				" entity's previous snapshot\n", (long long) change, bucket, len,
				nats_GetLastError(NULL), (int) jerr);
		return OUTCOME_OK;
	}
	fprintf(stderr, PROGRAM_NAME ": putting snapshot change %lld into KV bucket \"%s\""
			" failed: %s (%s); retrying\n", (long long) change, bucket, natsStatus_GetText(s),
			nats_GetLastError(NULL));
	return OUTCOME_RETRY;
}

/*
 * Puts one snapshot into its type's bucket under its id (state NULL: the
 * store withheld a state too large for NATS).  OUTCOME_OK also when it was
 * skipped (too large, or refused for good); OUTCOME_RETRY when NATS failed.
 */
Outcome
kv_put_snapshot(Relay *r, const char *type, int type_len, const char *id, int id_len,
				uint64_t stream_seq, const char *state, size_t state_len, int64_t change)
{
	char	   *bucket = bucket_name(type, type_len);
	char	   *key = escape_key(id, id_len);
	unsigned char *value = NULL;
	size_t		len;
	Outcome		outcome = OUTCOME_OK;

	if (fits(r, bucket, key, stream_seq, state_len, change) && state != NULL)
	{
		Bucket	   *b = bucket_of(r, bucket);

		value = encode_snapshot(stream_seq, state, (int) state_len, &len);
		if (b == NULL || value == NULL)
		{
			fprintf(stderr, PROGRAM_NAME ": putting snapshot change %lld into KV bucket \"%s\""
					" failed: %s\n", (long long) change, bucket,
					value == NULL ? "out of memory" : "no bucket");
			outcome = OUTCOME_RETRY;
		}
		else if (b->kv == NULL)
			fprintf(stderr, PROGRAM_NAME ": skipping snapshot change %lld: KV bucket \"%s\" does not"
					" exist and %ld snapshot buckets do (--max-buckets)\n", (long long) change,
					bucket, r->opt.max_buckets);
		else
			outcome = put_value(r, bucket, key, value, len, change);
	}
	free(bucket);
	free(key);
	free(value);
	return outcome;
}
