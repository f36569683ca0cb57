/*-------------------------------------------------------------------------
 *
 * locate.c
 *		The stream sequence of an event the relay published.
 *
 * A snapshot mirrored to NATS KV carries the stream sequence of the event
 * it covers (the Rust library numbers events by stream sequence).  The
 * relay asks the stream itself, which holds the relay's events exactly
 * once and in feed (position) order: first the last message of the
 * entity's subject (a snapshot usually covers an entity's newest event),
 * else a binary search over the stream's sequences by the messages'
 * Eventsourced-Position header, about log2(messages) reads.  The stream
 * is the truth, so this holds across restarts of the relay and of
 * nats-server, whatever the relay remembers.
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

/* How many deleted sequences a probe steps over before giving up. */
#define MAX_DELETED_STEPS		64

/* A message's Eventsourced-Position, or -1 when it has none. */
static int64_t
message_position(natsMsg *msg)
{
	const char *value = NULL;

	if (natsMsgHeader_Get(msg, "Eventsourced-Position", &value) != NATS_OK || value == NULL)
		return -1;
	return strtoll(value, NULL, 10);
}

/*
 * The position of the first message at or after seq (deleted sequences
 * stepped over, up to limit), with its sequence in *found.  Returns -1 on
 * failure, -2 when there is no message there.
 */
static int64_t
probe(Relay *r, uint64_t seq, uint64_t limit, uint64_t *found)
{
	for (int step = 0; step < MAX_DELETED_STEPS && seq <= limit; step++, seq++)
	{
		natsMsg    *msg = NULL;
		jsErrCode	jerr = 0;
		natsStatus	s = js_GetMsg(&msg, r->stream.js, r->opt.stream, seq, NULL, &jerr);
		int64_t		position;

		if (s == NATS_NOT_FOUND)
			continue;
		if (s != NATS_OK)
		{
			fprintf(stderr, PROGRAM_NAME ": cannot read message %" PRIu64 " of stream \"%s\": %s\n",
					seq, r->opt.stream, natsStatus_GetText(s));
			return -1;
		}
		position = message_position(msg);
		natsMsg_Destroy(msg);
		*found = seq;
		return position < 0 ? -1 : position;
	}
	return -2;
}

/* The stream's first and last sequences; false on failure. */
static bool
stream_bounds(Relay *r, uint64_t *first, uint64_t *last)
{
	jsStreamInfo *si = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s = js_GetStreamInfo(&si, r->stream.js, r->opt.stream, NULL, &jerr);

	if (s != NATS_OK)
	{
		fprintf(stderr, PROGRAM_NAME ": cannot read stream \"%s\": %s\n", r->opt.stream,
				natsStatus_GetText(s));
		return false;
	}
	*first = si->State.FirstSeq;
	*last = si->State.LastSeq;
	jsStreamInfo_Destroy(si);
	return true;
}

/*
 * Binary search for the message holding position: the smallest sequence
 * whose message's position is at least it.  Sets *stream_seq (0: not in
 * the stream).
 */
static Outcome
search(Relay *r, int64_t position, uint64_t *stream_seq)
{
	uint64_t	lo, hi, last, found = 0;
	int64_t		at;

	*stream_seq = 0;
	if (!stream_bounds(r, &lo, &last))
		return OUTCOME_RETRY;
	hi = last;
	while (lo < hi)
	{
		uint64_t	mid = lo + (hi - lo) / 2;

		at = probe(r, mid, hi, &found);

		if (at == -1)
			return OUTCOME_RETRY;
		if (at == -2 || at >= position)
			hi = mid;
		else
			lo = found + 1;
	}
	if (lo == 0)
		return OUTCOME_OK;
	at = probe(r, lo, last, &found);
	if (at == -1)
		return OUTCOME_RETRY;
	if (at == position)
		*stream_seq = found;
	return OUTCOME_OK;
}

/*
 * The stream sequence of the relay's message of the event at position on
 * subject, in *stream_seq (0 when the stream does not hold it: purged, or
 * a type left out by --types).
 */
Outcome
locate_event(Relay *r, const char *subject, int64_t position, uint64_t *stream_seq)
{
	natsMsg    *msg = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s = js_GetLastMsg(&msg, r->stream.js, r->opt.stream, subject, NULL, &jerr);

	if (s == NATS_OK && message_position(msg) == position)
	{
		*stream_seq = natsMsg_GetSequence(msg);
		natsMsg_Destroy(msg);
		return OUTCOME_OK;
	}
	natsMsg_Destroy(msg);
	if (s != NATS_OK && s != NATS_NOT_FOUND)
	{
		fprintf(stderr, PROGRAM_NAME ": cannot read the last message of %s: %s\n", subject,
				natsStatus_GetText(s));
		return OUTCOME_RETRY;
	}
	return search(r, position, stream_seq);
}
