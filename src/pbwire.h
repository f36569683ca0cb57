/*
 * pbwire.h
 *		The pre-check of an EventBatch's wire format, run before protobuf-c's
 *		generated decoder unpacks it.
 *
 * PostgreSQL-independent: plain C99, no allocation.  It is compiled into the
 * extension (protobuf.c maps a refusal to ereport) and into the fuzzers
 * (test/fuzz/fuzz_batch.c, which checks what follows against protobuf-c).
 *
 * The scan stops at the first fault in the order of the bytes, one of:
 *	- a top-level field key that is truncated, over 10 bytes, or field 0;
 *	- a top-level field that is truncated (a varint, a length past the end)
 *	  or of wire type 3, 4, 6 or 7;
 *	- event number ES_PBWIRE_MAX_EVENTS + 1 (field 1, wire type 2);
 *	- inside an event: a truncated or over-long key, a truncated field or
 *	  one of wire type 3, 4, 6 or 7;
 *	- inside an event: a NUL byte in any occurrence of the string fields 2,
 *	  3, 5 or 9 (protobuf-c would cut the string there).
 * The rest is left to protobuf-c: it keeps unknown fields (also field 0
 * inside an event when its key has several bytes) and refuses a field 1 of
 * another wire type, a one-byte key of field 0 inside an event, and keys
 * and length prefixes of 6 to 10 bytes (it reads at most 5).
 *
 * Once the scan accepts n bytes, protobuf-c 1.4/1.5 asks its allocator for
 * at most ES_PBWIRE_UNPACK_BOUND(n) bytes in all to unpack them, whether or
 * not the unpack then succeeds (derived and checked in
 * test/fuzz/fuzz_batch.c); that bounds the peak too, before the allocator's
 * own overhead (palloc's rounding and chunk headers).
 */
#ifndef PBWIRE_H
#define PBWIRE_H

#include <stddef.h>
#include <stdint.h>

#define ES_PBWIRE_MAX_EVENTS		100000	/* events in one EventBatch */
#define ES_PBWIRE_MAX_VARINT_BYTES	10
#define ES_PBWIRE_VARINT			0
#define ES_PBWIRE_FIXED64			1
#define ES_PBWIRE_LEN				2
#define ES_PBWIRE_FIXED32			5
#define ES_PBWIRE_FIELD_EVENTS		1	/* EventBatch.events */

/*
 * Bytes protobuf-c 1.4/1.5 requests at most, in total over the unpack, for an
 * EventBatch of n bytes on a 64-bit machine: 48 for the EventBatch plus 96
 * a byte; the worst case is a run of empty events (2 bytes each: a 120-byte
 * Event, an 8-byte pointer and up to two 32-byte scan slots).
 */
#define ES_PBWIRE_UNPACK_BOUND(n)	(48 + 96 * (size_t) (n))

typedef enum EsPbWireError
{
	ES_PBWIRE_OK = 0,
	ES_PBWIRE_BAD_KEY,			/* top-level key at offset */
	ES_PBWIRE_BAD_FIELD,		/* top-level field at offset */
	ES_PBWIRE_TOO_MANY_EVENTS,	/* event number event is one too many */
	ES_PBWIRE_EVENT_BAD_KEY,	/* key at offset within event */
	ES_PBWIRE_EVENT_TRUNCATED,	/* field at offset within event */
	ES_PBWIRE_EVENT_NUL			/* string field at offset within event */
} EsPbWireError;

typedef struct EsPbWireResult
{
	EsPbWireError error;
	size_t		offset;			/* byte of the key at fault (see above) */
	uint64_t	field;			/* its field number, when the key was read */
	int			event;			/* 1-based event of an event error */
	int			nevents;		/* events counted (all of them when ok) */
} EsPbWireResult;

extern EsPbWireResult es_pbwire_check_batch(const uint8_t *buf, size_t len);

#endif							/* PBWIRE_H */
