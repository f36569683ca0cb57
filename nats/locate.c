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
 * Eventsourced-Position header, about log2(messages) probes.  A probe asks
 * the server for the first message at or after a sequence, so deleted
 * sequences (purges, limits) are crossed however many there are.  The stream
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

/* The JetStream API's message get, and the reply's marks (nats-server 2.9). */
#define MSG_GET_API				"$JS.API.STREAM.MSG.GET."
#define NO_MESSAGE_CODE			"\"code\":404"
#define SEQ_KEY					"\"seq\":"

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
 * The sequence of the stream's first message at or after seq, asked of
 * the server in one request ("next_by_subj" over all of the relay's
 * subjects), so that deleted sequences of any number are crossed (purges,
 * limits).  Returns 1 with *next set, 0 when there is none, -1 on failure.
 */
static int
next_sequence(Relay *r, uint64_t seq, uint64_t *next)
{
	char		subject[sizeof(MSG_GET_API) + MAX_STREAM_NAME];
	char		body[64 + MAX_STREAM_NAME];
	natsMsg    *reply = NULL;
	natsStatus	s;
	const char *data;
	const char *at;
	int			found = -1;

	snprintf(subject, sizeof(subject), MSG_GET_API "%s", r->opt.stream);
	snprintf(body, sizeof(body), "{\"seq\":%" PRIu64 ",\"next_by_subj\":\"%s.>\"}", seq,
			 r->opt.stream);
	s = natsConnection_RequestString(&reply, r->stream.conn, subject, body, r->opt.ack_wait_ms);
	if (s != NATS_OK)
	{
		fprintf(stderr, PROGRAM_NAME ": cannot read stream \"%s\" at %" PRIu64 ": %s\n",
				r->opt.stream, seq, natsStatus_GetText(s));
		return -1;
	}
	data = natsMsg_GetData(reply);
	if (data == NULL)
		data = "";
	/* a JSON reply: "seq" appears only as a key (quotes in strings are escaped) */
	if (strstr(data, "\"error\"") != NULL && strstr(data, NO_MESSAGE_CODE) != NULL)
		found = 0;
	else if (strstr(data, "\"error\"") == NULL && (at = strstr(data, SEQ_KEY)) != NULL)
	{
		*next = strtoull(at + strlen(SEQ_KEY), NULL, 10);
		found = *next >= seq ? 1 : -1;
	}
	if (found < 0)
		fprintf(stderr, PROGRAM_NAME ": cannot read stream \"%s\" at %" PRIu64 ": %.200s\n",
				r->opt.stream, seq, data);
	natsMsg_Destroy(reply);
	return found;
}

/*
 * The position of the first message at or after seq and at most limit,
 * with its sequence in *found.  Returns -1 on failure, -2 when there is
 * no message there.
 */
static int64_t
probe(Relay *r, uint64_t seq, uint64_t limit, uint64_t *found)
{
	natsMsg    *msg = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s;
	int64_t		position;
	int			has = next_sequence(r, seq, &seq);

	if (has <= 0)
		return has == 0 ? -2 : -1;
	if (seq > limit)
		return -2;
	s = js_GetMsg(&msg, r->stream.js, r->opt.stream, seq, NULL, &jerr);
	if (s == NATS_NOT_FOUND)
		return probe(r, seq + 1, limit, found);	/* deleted meanwhile */
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
