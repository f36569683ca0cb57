/*-------------------------------------------------------------------------
 *
 * stream.c
 *		The NATS side of the relay: the connection, the stream, and the
 *		reconciliation of the checkpoint with the stream's last message.
 *
 * JetStream's duplicate window (Nats-Msg-Id) is finite, so the relay does
 * not rely on it: at start and after every failed publish it reads the
 * stream's last message, which tells the position the stream holds up to
 * (Eventsourced-Position) and the stream sequence the next publish must
 * follow.  Since every publish expects the sequence before it, the stream
 * never holds an event whose predecessors in the feed it lacks.
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

/* How long a connection attempt and the JetStream API calls may take. */
#define CONNECT_TIMEOUT_MS		2000
#define RECONNECT_WAIT_MS		250
/* Asynchronous publishes in flight at most. */
#define MAX_PENDING_PUBLISHES	16384

/* Set once the relay closes its connection on purpose (at exit). */
static volatile sig_atomic_t closing = 0;

/* Marks the connections' ends from here on as intended: no message for them. */
void
stream_closing(void)
{
	closing = 1;
}

/* Says when libnats lost its server; it reconnects by itself. */
static void
on_disconnected(natsConnection *nc, void *closure)
{
	(void) nc;
	(void) closure;
	if (!closing)
		fprintf(stderr, PROGRAM_NAME ": disconnected from nats-server; reconnecting\n");
}

/* Says when libnats found its server again. */
static void
on_reconnected(natsConnection *nc, void *closure)
{
	(void) nc;
	(void) closure;
	fprintf(stderr, PROGRAM_NAME ": reconnected to nats-server\n");
}

/* Applies the credential and TLS options to the connection's options. */
static natsStatus
set_security(natsOptions *o, const Options *opt)
{
	natsStatus	s = NATS_OK;

	if (opt->creds)
		s = natsOptions_SetUserCredentialsFromFiles(o, opt->creds, NULL);
	if (s == NATS_OK && opt->nkey)
		s = natsOptions_SetNKeyFromSeed(o, opt->nkey, opt->nkey_seed);
	if (s == NATS_OK && opt->tls)
		s = natsOptions_SetSecure(o, true);
	if (s == NATS_OK && opt->tls_ca)
		s = natsOptions_LoadCATrustedCertificates(o, opt->tls_ca);
	if (s == NATS_OK && opt->tls_cert)
		s = natsOptions_LoadCertificatesChain(o, opt->tls_cert, opt->tls_key);
	return s;
}

/*
 * Builds the connection's options: reconnect forever, say so when it
 * happens; send_asap for request/reply (no wait for the flusher).
 */
static natsStatus
make_options(natsOptions **o, const Options *opt, bool send_asap)
{
	natsStatus	s = natsOptions_Create(o);

	if (s == NATS_OK)
		s = natsOptions_SetURL(*o, opt->nats_url);
	if (s == NATS_OK)
		s = natsOptions_SetName(*o, opt->name);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(*o, CONNECT_TIMEOUT_MS);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(*o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(*o, RECONNECT_WAIT_MS);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(*o, on_disconnected, NULL);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(*o, on_reconnected, NULL);
	if (s == NATS_OK)
		s = natsOptions_SetSendAsap(*o, send_asap);
	if (s == NATS_OK)
		s = set_security(*o, opt);
	return s;
}

/*
 * The --nats URLs as the relay's messages show them: user and password
 * (nats://user:password@host) left out.
 */
static void
print_urls(FILE *out, const char *urls)
{
	bool		hidden = false;

	for (const char *u = urls; *u;)
	{
		const char *end = u + strcspn(u, ",");
		const char *at = memchr(u, '@', end - u);
		const char *scheme = strstr(u, "://");
		int			head = scheme && scheme < end ? (int) (scheme + 3 - u) : 0;

		if (at)
			fprintf(out, "%.*s%.*s", head, u, (int) (end - at - 1), at + 1);
		else
			fprintf(out, "%.*s", (int) (end - u), u);
		hidden |= at != NULL;
		if (*end == ',')
			fputc(',', out);
		u = *end ? end + 1 : end;
	}
	if (hidden)
		fprintf(out, " (user and password hidden)");
}

/* Opens a connection to NATS with the relay's options; reports a failure. */
natsConnection *
stream_open_connection(const Relay *r, bool send_asap)
{
	natsOptions *o = NULL;
	natsConnection *nc = NULL;
	natsStatus	s = make_options(&o, &r->opt, send_asap);

	if (s == NATS_OK)
		s = natsConnection_Connect(&nc, o);
	natsOptions_Destroy(o);
	if (s != NATS_OK)
	{
		fprintf(stderr, PROGRAM_NAME ": cannot connect to nats-server at ");
		print_urls(stderr, r->opt.nats_url);
		fprintf(stderr, ": %s\n", natsStatus_GetText(s));
	}
	return nc;
}

/* Connects to NATS and opens the JetStream context with the relay's ack handler. */
bool
stream_connect(Relay *r)
{
	jsOptions	jo;
	natsStatus	s;

	r->stream.conn = stream_open_connection(r, false);
	if (r->stream.conn == NULL)
		return false;
	jsOptions_Init(&jo);
	jo.Wait = r->opt.ack_wait_ms;
	jo.PublishAsync.MaxPending = MAX_PENDING_PUBLISHES;
	jo.PublishAsync.StallWait = r->opt.ack_wait_ms;	/* a full pipeline waits, it does not fail */
	jo.PublishAsync.AckHandler = on_ack;
	jo.PublishAsync.AckHandlerClosure = &r->stream;
	s = natsConnection_JetStream(&r->stream.js, r->stream.conn, &jo);
	if (s != NATS_OK)
	{
		fprintf(stderr, PROGRAM_NAME ": no JetStream context: %s\n", natsStatus_GetText(s));
		stream_close(&r->stream);
		return false;
	}
	r->stream.max_payload = natsConnection_GetMaxPayload(r->stream.conn);
	return true;
}

/* Closes the NATS side; pending publishes are dropped (the next start reconciles). */
void
stream_close(Stream *s)
{
	stream_closing();
	jsCtx_Destroy(s->js);
	natsConnection_Destroy(s->conn);
	s->js = NULL;
	s->conn = NULL;
}

/* Creates the stream (subjects <stream>.>, file storage) when it is missing. */
static natsStatus
create_stream(jsStreamInfo **si, Relay *r)
{
	jsStreamConfig cfg;
	jsErrCode	jerr = 0;
	char		subject[MAX_STREAM_NAME + 3];
	const char *subjects[] = {subject};
	natsStatus	s;

	snprintf(subject, sizeof(subject), "%s.>", r->opt.stream);
	jsStreamConfig_Init(&cfg);
	cfg.Name = r->opt.stream;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	s = js_AddStream(si, r->stream.js, &cfg, NULL, &jerr);
	if (s == NATS_OK)
		fprintf(stderr, PROGRAM_NAME ": created stream \"%s\" (subjects %s)\n",
				r->opt.stream, subject);
	return s;
}

/* Whether the stream takes the relay's subjects (<stream>.> or everything). */
static bool
stream_takes_subjects(const jsStreamInfo *si, const char *stream)
{
	size_t		len = strlen(stream);

	for (int i = 0; i < si->Config->SubjectsLen; i++)
	{
		const char *subject = si->Config->Subjects[i];

		if (strcmp(subject, ">") == 0 ||
			(strncmp(subject, stream, len) == 0 && strcmp(subject + len, ".>") == 0))
			return true;
	}
	fprintf(stderr, PROGRAM_NAME ": stream \"%s\" does not take the subjects %s.>\n",
			stream, stream);
	return false;
}

/* Reads a header of the stream's last message; NULL when it has none. */
static const char *
header(natsMsg *msg, const char *key)
{
	const char *value = NULL;

	if (natsMsgHeader_Get(msg, key, &value) != NATS_OK)
		return NULL;
	return value;
}

/*
 * Learns from the stream's last message which position it holds up to.
 * The message must come from this relay of this store: another writer of
 * the stream would break the sequence chain the relay relies on.
 */
static Outcome
read_last_message(Relay *r, uint64_t seq)
{
	natsMsg    *msg = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s = js_GetMsg(&msg, r->stream.js, r->opt.stream, seq, NULL, &jerr);
	const char *id, *relay, *position;
	size_t		idlen = strlen(r->store.store_id);

	r->stream.resume_after = -1;
	if (s == NATS_NOT_FOUND)
		return OUTCOME_OK;		/* deleted or purged: the checkpoint decides */
	if (s != NATS_OK)
	{
		fprintf(stderr, PROGRAM_NAME ": cannot read message %" PRIu64 " of stream \"%s\": %s\n",
				seq, r->opt.stream, natsStatus_GetText(s));
		return OUTCOME_RETRY;
	}
	id = header(msg, "Nats-Msg-Id");
	relay = header(msg, "Eventsourced-Relay");
	position = header(msg, "Eventsourced-Position");
	if (id && relay && position && strncmp(id, r->store.store_id, idlen) == 0 &&
		id[idlen] == '-' && strcmp(relay, r->stream.relay_token) == 0)
	{
		r->stream.resume_after = strtoll(position, NULL, 10);
		natsMsg_Destroy(msg);
		return OUTCOME_OK;
	}
	fprintf(stderr, PROGRAM_NAME ": the last message of stream \"%s\" (sequence %" PRIu64
			") was not published by relay \"%s\" of this database; a stream takes one relay"
			" and no other writer\n", r->opt.stream, seq, r->opt.name);
	natsMsg_Destroy(msg);
	return OUTCOME_FATAL;
}

/*
 * Finds (or creates) the stream and its last message: afterwards
 * last_seq is the sequence the next publish follows and resume_after the
 * position the stream holds up to (-1: unknown, the checkpoint decides).
 */
Outcome
stream_reconcile(Relay *r)
{
	jsStreamInfo *si = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s = js_GetStreamInfo(&si, r->stream.js, r->opt.stream, NULL, &jerr);
	Outcome		outcome;

	if (s == NATS_NOT_FOUND)
		s = create_stream(&si, r);
	if (s != NATS_OK)
	{
		fprintf(stderr, PROGRAM_NAME ": cannot find or create stream \"%s\": %s\n",
				r->opt.stream, natsStatus_GetText(s));
		return OUTCOME_RETRY;
	}
	if (!stream_takes_subjects(si, r->opt.stream))
	{
		jsStreamInfo_Destroy(si);
		return OUTCOME_FATAL;
	}
	r->stream.last_seq = si->State.LastSeq;
	jsStreamInfo_Destroy(si);
	r->stream.nmarks = 0;
	r->stream.sent = 0;
	atomic_store(&r->stream.acked, 0);
	atomic_store(&r->stream.failed, 0);
	if (r->stream.last_seq == 0)
	{
		r->stream.resume_after = -1;
		return OUTCOME_OK;
	}
	outcome = read_last_message(r, r->stream.last_seq);
	return outcome;
}
