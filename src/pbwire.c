/*
 * pbwire.c
 *		The pre-check of an EventBatch's wire format (see pbwire.h).
 *
 * No PostgreSQL headers: this file is compiled into the extension and into
 * the fuzzers (test/fuzz).  It reads the input once, allocates nothing and
 * stops at the first fault, which it describes in an EsPbWireResult.
 */
#include <stdbool.h>
#include <string.h>

#include "pbwire.h"

/* Read a varint at *pos; false when truncated or longer than 10 bytes */
static bool
es_pbwire_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *value)
{
	*value = 0;
	for (int i = 0; i < ES_PBWIRE_MAX_VARINT_BYTES && *pos < len; i++)
	{
		uint8_t		b = buf[(*pos)++];

		*value |= (uint64_t) (b & 0x7F) << (7 * i);
		if ((b & 0x80) == 0)
			return true;
	}
	return false;
}

/* Skip the value of a field of the given wire type; false when malformed */
static bool
es_pbwire_skip(const uint8_t *buf, size_t len, size_t *pos, int wire_type)
{
	uint64_t	n;

	switch (wire_type)
	{
		case ES_PBWIRE_VARINT:
			return es_pbwire_varint(buf, len, pos, &n);
		case ES_PBWIRE_FIXED64:
			n = 8;
			break;
		case ES_PBWIRE_FIXED32:
			n = 4;
			break;
		case ES_PBWIRE_LEN:
			if (!es_pbwire_varint(buf, len, pos, &n))
				return false;
			break;
		default:
			return false;
	}
	if (n > len - *pos)
		return false;
	*pos += n;
	return true;
}

/* Whether field of Event is a string (protobuf-c ends those at a NUL byte) */
static bool
es_pbwire_event_string_field(uint64_t field)
{
	return field == 2 || field == 3 || field == 5 || field == 9;
}

/* The result of a scan: what is wrong if anything, where, and the events counted */
static EsPbWireResult
es_pbwire_result(EsPbWireError error, size_t offset, uint64_t field,
				 int event, int nevents)
{
	EsPbWireResult res = {error, offset, field, event, nevents};

	return res;
}

/*
 * Check the fields of one Event, and refuse a NUL byte in its string fields:
 * protobuf-c would cut them there ("pb\0x" would be stored as "pb").  buf is
 * the Event's bytes, already known to be within the batch.  On a fault,
 * *offset is its key's byte within the Event, *field its field number.
 */
static EsPbWireError
es_pbwire_check_event(const uint8_t *buf, size_t len, size_t *offset,
					  uint64_t *field)
{
	size_t		pos = 0;

	while (pos < len)
	{
		uint64_t	key;
		uint64_t	n;

		*offset = pos;
		*field = 0;
		if (!es_pbwire_varint(buf, len, &pos, &key))
			return ES_PBWIRE_EVENT_BAD_KEY;
		*field = key >> 3;
		if ((key & 7) != ES_PBWIRE_LEN || !es_pbwire_event_string_field(key >> 3))
		{
			if (!es_pbwire_skip(buf, len, &pos, (int) (key & 7)))
				return ES_PBWIRE_EVENT_TRUNCATED;
			continue;
		}
		if (!es_pbwire_varint(buf, len, &pos, &n) || n > len - pos)
			return ES_PBWIRE_EVENT_TRUNCATED;
		if (memchr(buf + pos, '\0', n) != NULL)
			return ES_PBWIRE_EVENT_NUL;
		pos += n;
	}
	return ES_PBWIRE_OK;
}

/*
 * Check the wire format of an EventBatch (its fields, and the fields of each
 * Event) and count its events, before protobuf-c allocates anything for it.
 */
EsPbWireResult
es_pbwire_check_batch(const uint8_t *buf, size_t len)
{
	size_t		pos = 0;
	int			nevents = 0;

	while (pos < len)
	{
		uint64_t	key;
		size_t		at = pos;

		if (!es_pbwire_varint(buf, len, &pos, &key) || (key >> 3) == 0)
			return es_pbwire_result(ES_PBWIRE_BAD_KEY, at, 0, 0, nevents);
		if ((key >> 3) == ES_PBWIRE_FIELD_EVENTS && (key & 7) == ES_PBWIRE_LEN)
		{
			size_t		start = pos;
			uint64_t	n;
			size_t		offset;
			uint64_t	field;
			EsPbWireError error;

			if (++nevents > ES_PBWIRE_MAX_EVENTS)
				return es_pbwire_result(ES_PBWIRE_TOO_MANY_EVENTS, at, key >> 3,
							nevents, nevents);
			if (es_pbwire_varint(buf, len, &start, &n) && n <= len - start &&
				(error = es_pbwire_check_event(buf + start, n, &offset, &field)) != ES_PBWIRE_OK)
				return es_pbwire_result(error, offset, field, nevents, nevents);
		}
		if (!es_pbwire_skip(buf, len, &pos, (int) (key & 7)))
			return es_pbwire_result(ES_PBWIRE_BAD_FIELD, at, key >> 3, 0, nevents);
	}
	return es_pbwire_result(ES_PBWIRE_OK, 0, 0, 0, nevents);
}
