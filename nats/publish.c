/*-------------------------------------------------------------------------
 *
 * publish.c
 *		One page of the feed into JetStream.
 *
 * Each event becomes a message on <stream>.<entity_type>.<entity_id>
 * (escaped, see subject.c) with the event's bytes as payload and headers
 * that identify it.  Publishes are asynchronous and pipelined across
 * pages, each expecting the stream sequence of the one before
 * (ExpectLastSeq): if one fails, all later ones fail too, so a subject's
 * messages can never overtake each other.  The checkpoint moves to a
 * page's end only once every publish of the page was acknowledged.
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

/* The version byte that starts jsonb's binary format. */
#define JSONB_BINARY_VERSION	1
#define UUID_BYTES				16
/* Bytes a message's headers take besides keys and values. */
#define HEADER_LINE_OVERHEAD	4	/* ": " and CRLF */
#define HEADER_FIXED_OVERHEAD	80	/* NATS/1.0 line, final CRLF, expected-sequence header */

/*
 * Counts the positive acknowledgements; any error or duplicate marks the
 * chain failed (later publishes fail with it).  Runs on a libnats thread.
 */
void
on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	Stream	   *s = closure;

	(void) js;
	if (pae == NULL && pa != NULL && !pa->Duplicate)
		atomic_fetch_add(&s->acked, 1);
	else if (!s->failed)
	{
		const char *position = NULL;

		natsMsgHeader_Get(msg, "Eventsourced-Position", &position);
		snprintf(s->failure, sizeof(s->failure), "position %s: %s",
				 position ? position : "?",
				 pae ? (pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err))
				 : "duplicate");
		s->failed = 1;
	}
	natsMsg_Destroy(msg);
}

/* Whether the page's row is of a type the relay follows (--types). */
static bool
wanted(const Relay *r, const PGresult *page, int row)
{
	return follows_type(&r->opt, PQgetvalue(page, row, COL_ENTITY_TYPE));
}

/* The event's payload: the JSON text of a jsonb, or the bytes of a bytea. */
static bool
payload(const PGresult *page, int row, const char **data, int *len)
{
	if (!PQgetisnull(page, row, COL_PAYLOAD_BYTES))
	{
		*data = PQgetvalue(page, row, COL_PAYLOAD_BYTES);
		*len = PQgetlength(page, row, COL_PAYLOAD_BYTES);
		return true;
	}
	*data = PQgetvalue(page, row, COL_PAYLOAD);
	*len = PQgetlength(page, row, COL_PAYLOAD);
	if (PQgetisnull(page, row, COL_PAYLOAD) || *len < 1 ||
		**data != JSONB_BINARY_VERSION)
		return false;
	(*data)++;
	(*len)--;
	return true;
}

/* The message's subject: <stream>.<escaped entity_type>.<escaped entity_id>. */
static char *
subject_of(const Relay *r, const PGresult *page, int row)
{
	return entity_subject(r->opt.stream, PQgetvalue(page, row, COL_ENTITY_TYPE),
						  PQgetlength(page, row, COL_ENTITY_TYPE),
						  PQgetvalue(page, row, COL_ENTITY_ID),
						  PQgetlength(page, row, COL_ENTITY_ID));
}

/* Formats a binary uuid as text. */
static void
format_uuid(const unsigned char *b, char *out)
{
	sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
			b[11], b[12], b[13], b[14], b[15]);
}

/* Sets one header and counts the bytes it takes. */
static natsStatus
set_header(natsMsg *msg, const char *key, const char *value, size_t *bytes)
{
	*bytes += strlen(key) + strlen(value) + HEADER_LINE_OVERHEAD;
	return natsMsgHeader_Set(msg, key, value);
}

/* Sets the headers that identify the event; adds their size to *bytes. */
static natsStatus
set_headers(const Relay *r, natsMsg *msg, const PGresult *page, int row,
			const char *msg_id, size_t *bytes)
{
	char		seq_no[NUMBER_TEXT_LEN];
	char		uuid[40];
	char	   *event_type = escape_token(PQgetvalue(page, row, COL_EVENT_TYPE),
										  PQgetlength(page, row, COL_EVENT_TYPE));
	natsStatus	s;

	snprintf(seq_no, sizeof(seq_no), "%lld",
			 (long long) read_int64(PQgetvalue(page, row, COL_SEQ_NO)));
	s = set_header(msg, "Nats-Msg-Id", msg_id, bytes);
	if (s == NATS_OK)
		s = set_header(msg, "Eventsourced-Position", strrchr(msg_id, '-') + 1, bytes);
	if (s == NATS_OK)
		s = set_header(msg, "Eventsourced-Seq-No", seq_no, bytes);
	if (s == NATS_OK)
		s = set_header(msg, "Eventsourced-Event-Type", event_type, bytes);
	if (s == NATS_OK)
		s = set_header(msg, "Eventsourced-Relay", r->stream.relay_token, bytes);
	if (s == NATS_OK && !PQgetisnull(page, row, COL_EVENT_ID) &&
		PQgetlength(page, row, COL_EVENT_ID) == UUID_BYTES)
	{
		format_uuid((const unsigned char *) PQgetvalue(page, row, COL_EVENT_ID), uuid);
		s = set_header(msg, "Eventsourced-Event-Id", uuid, bytes);
	}
	if (s == NATS_OK && !PQgetisnull(page, row, COL_METADATA) &&
		PQgetlength(page, row, COL_METADATA) > 1)
		s = set_header(msg, "Eventsourced-Metadata",
					   PQgetvalue(page, row, COL_METADATA) + 1, bytes);
	free(event_type);
	return s;
}

/*
 * Builds the message of one event.  Returns NULL with *too_big set when it
 * would exceed the server's max_payload, NULL alone on any other failure.
 */
static natsMsg *
build_message(const Relay *r, const PGresult *page, int row, int64_t position,
			  bool *too_big)
{
	char		msg_id[sizeof(r->store.store_id) + NUMBER_TEXT_LEN];
	char	   *subject = subject_of(r, page, row);
	natsMsg    *msg = NULL;
	const char *data;
	int			len;
	size_t		bytes = HEADER_FIXED_OVERHEAD;
	natsStatus	s;

	*too_big = false;
	if (!payload(page, row, &data, &len))
	{
		fprintf(stderr, PROGRAM_NAME ": event at position %lld has no payload\n",
				(long long) position);
		free(subject);
		return NULL;
	}
	if (strlen(subject) > MAX_SUBJECT_BYTES)
	{
		fprintf(stderr, PROGRAM_NAME ": the subject of the event at position %lld takes %zu bytes,"
				" more than the %d bytes nats-server's control line leaves; stopping\n",
				(long long) position, strlen(subject), MAX_SUBJECT_BYTES);
		free(subject);
		*too_big = true;
		return NULL;
	}
	snprintf(msg_id, sizeof(msg_id), "%s-%lld", r->store.store_id, (long long) position);
	s = natsMsg_Create(&msg, subject, NULL, data, len);
	if (s == NATS_OK)
		s = set_headers(r, msg, page, row, msg_id, &bytes);
	free(subject);
	if (s == NATS_OK && (int64_t) (bytes + len) > r->stream.max_payload)
	{
		fprintf(stderr, PROGRAM_NAME ": the event at position %lld takes %zu bytes with its"
				" headers, more than nats-server's max_payload of %lld bytes; stopping\n",
				(long long) position, bytes + len, (long long) r->stream.max_payload);
		*too_big = true;
		s = NATS_MAX_PAYLOAD;
	}
	if (s != NATS_OK)
	{
		if (!*too_big)
			fprintf(stderr, PROGRAM_NAME ": cannot build the message of position %lld: %s\n",
					(long long) position, natsStatus_GetText(s));
		natsMsg_Destroy(msg);
		return NULL;
	}
	return msg;
}

/*
 * Publishes one message after the stream's last sequence.  Into an empty
 * stream there is no sequence to expect, so the first message goes
 * synchronously; all others are pipelined.
 */
static bool
publish_message(Relay *r, natsMsg *msg)
{
	jsPubOptions o;
	natsStatus	s;

	/*
	 * No per-message MaxWait (a timer per message would cost a third of
	 * the relay's CPU): a missing ack shows at the next drain, whose wait
	 * is bounded, or as the failure of every later message of the chain.
	 */
	jsPubOptions_Init(&o);
	o.ExpectLastSeq = r->stream.last_seq;
	if (r->stream.last_seq == 0)
	{
		jsPubAck   *pa = NULL;
		jsErrCode	jerr = 0;

		o.MaxWait = r->opt.ack_wait_ms;
		s = js_PublishMsg(&pa, r->stream.js, msg, &o, &jerr);
		if (s == NATS_OK && !pa->Duplicate)
		{
			r->stream.last_seq = pa->Sequence;
			atomic_fetch_add(&r->stream.acked, 1);	/* no ack handler for this one */
		}
		else if (s == NATS_OK)
			s = NATS_ERR;
		jsPubAck_Destroy(pa);
		natsMsg_Destroy(msg);
	}
	else
	{
		s = js_PublishMsgAsync(r->stream.js, &msg, &o);
		natsMsg_Destroy(msg);	/* no-op once libnats took it */
		if (s == NATS_OK)
			r->stream.last_seq++;
	}
	if (s != NATS_OK)
		fprintf(stderr, PROGRAM_NAME ": publishing failed: %s\n", natsStatus_GetText(s));
	return s == NATS_OK;
}

/*
 * Waits for the acknowledgements of everything published; true when all
 * came back positive.  Publishes still unanswered are dropped: the stream
 * is reconciled before anything more is published.
 */
static bool
wait_for_acks(Relay *r)
{
	jsPubOptions o;
	natsStatus	s;

	jsPubOptions_Init(&o);
	o.MaxWait = 2 * r->opt.ack_wait_ms;
	s = js_PublishAsyncComplete(r->stream.js, &o);
	if (s != NATS_OK)
	{
		natsMsgList pending;

		if (js_PublishAsyncGetPendingList(&pending, r->stream.js) == NATS_OK)
			natsMsgList_Destroy(&pending);
		fprintf(stderr, PROGRAM_NAME ": no acknowledgement from JetStream: %s\n",
				natsStatus_GetText(s));
		return false;
	}
	if (r->stream.failed)
	{
		fprintf(stderr, PROGRAM_NAME ": JetStream refused a message (%s); reconciling\n",
				r->stream.failure);
		return false;
	}
	return true;
}

/* Notes that the acks of everything sent so far complete the feed up to end. */
static void
push_mark(Relay *r, int64_t end)
{
	Stream	   *st = &r->stream;

	st->marks[(st->first_mark + st->nmarks) % MAX_PAGE_MARKS].sent = st->sent;
	st->marks[(st->first_mark + st->nmarks) % MAX_PAGE_MARKS].end = end;
	st->nmarks++;
}

/*
 * Moves the checkpoint as far as the acks received so far allow: to the
 * end of the newest page whose messages were all acknowledged.  Counting
 * suffices: a positive ack means the stream stored every message before
 * it too (each publish expects its predecessor's sequence), and any
 * failure stops the counting.  With drain (caught up, or a stop), waits
 * for every ack first.
 */
static Outcome
settle(Relay *r, bool drain)
{
	Stream	   *st = &r->stream;
	uint64_t	acked;
	int64_t		end = -1;

	if (drain && !wait_for_acks(r))
		return OUTCOME_RETRY;
	if (st->failed)
	{
		wait_for_acks(r);
		return OUTCOME_RETRY;
	}
	acked = atomic_load(&st->acked);
	while (st->nmarks > 0 && st->marks[st->first_mark].sent <= acked)
	{
		end = st->marks[st->first_mark].end;
		st->first_mark = (st->first_mark + 1) % MAX_PAGE_MARKS;
		st->nmarks--;
	}
	if (end > r->store.checkpoint && !store_save_checkpoint(r, end))
		return OUTCOME_RETRY;
	return OUTCOME_OK;
}

/*
 * Publishes the page's events the relay follows, without waiting for the
 * acks of this page or earlier ones (JetStream keeps working while the
 * next page is read), and moves the checkpoint as far as the acks allow.
 * A short page (caught up) waits for every ack.  An event too big for the
 * server stops the relay after everything before it.
 */
Outcome
publish_page(Relay *r, const PGresult *page)
{
	int			rows = PQntuples(page);
	int64_t		done = r->store.checkpoint;

	for (int row = 0; row < rows; row++)
	{
		int64_t		position = read_int64(PQgetvalue(page, row, COL_POSITION));
		natsMsg    *msg;
		bool		too_big;

		if (wanted(r, page, row))
		{
			msg = build_message(r, page, row, position, &too_big);
			if (msg == NULL)
			{
				push_mark(r, done);
				return settle(r, true) == OUTCOME_OK ? OUTCOME_FATAL : OUTCOME_RETRY;
			}
			if (!publish_message(r, msg))
			{
				wait_for_acks(r);
				return OUTCOME_RETRY;
			}
			r->stream.sent++;
		}
		done = position;
	}
	push_mark(r, done);
	r->read_after = done;
	return settle(r, rows < r->opt.batch || r->stream.nmarks == MAX_PAGE_MARKS);
}

/* Waits for every ack and moves the checkpoint (caught up, or stopping). */
Outcome
publish_flush(Relay *r)
{
	return settle(r, true);
}
