/*-------------------------------------------------------------------------
 *
 * publisher.c
 *		The baseline of the relay's throughput: a plain libnats
 *		asynchronous publisher sending the store's events from memory, with
 *		the same subjects, payloads and headers the relay sends (no feed
 *		paging, no checkpoint, no expected sequence).  Also deletes the
 *		stream, so that each run starts from an empty one.
 *
 * Usage: publisher CONNSTR NATS_URL STREAM N     prints events/s
 *        publisher - NATS_URL STREAM --delete
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>
#include "libpq-fe.h"

#define LOAD_SQL \
	"SELECT entity_type, entity_id, payload::text, position::text, seq_no::text, event_type" \
	" FROM eventsourced.events ORDER BY position LIMIT $1"

/* Seconds on the monotonic clock. */
static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Creates the stream (file storage) afresh. */
static natsStatus
fresh_stream(jsCtx *js, const char *stream)
{
	jsStreamConfig cfg;
	jsErrCode	jerr = 0;
	char		subject[300];
	const char *subjects[] = {subject};

	js_DeleteStream(js, stream, NULL, &jerr);
	snprintf(subject, sizeof(subject), "%s.>", stream);
	jsStreamConfig_Init(&cfg);
	cfg.Name = stream;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	return js_AddStream(NULL, js, &cfg, NULL, &jerr);
}

/* Publishes the loaded events asynchronously and waits for every ack. */
static natsStatus
publish_all(jsCtx *js, PGresult *res, const char *stream)
{
	int			rows = PQntuples(res);
	char		subject[600];
	char		msg_id[64];
	natsStatus	s = NATS_OK;

	for (int i = 0; i < rows && s == NATS_OK; i++)
	{
		natsMsg    *msg = NULL;

		snprintf(subject, sizeof(subject), "%s.%s.%s", stream, PQgetvalue(res, i, 0),
				 PQgetvalue(res, i, 1));
		snprintf(msg_id, sizeof(msg_id), "bench-%s", PQgetvalue(res, i, 3));
		s = natsMsg_Create(&msg, subject, NULL, PQgetvalue(res, i, 2),
						   PQgetlength(res, i, 2));
		if (s == NATS_OK)
			s = natsMsgHeader_Set(msg, "Nats-Msg-Id", msg_id);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(msg, "Eventsourced-Position", PQgetvalue(res, i, 3));
		if (s == NATS_OK)
			s = natsMsgHeader_Set(msg, "Eventsourced-Seq-No", PQgetvalue(res, i, 4));
		if (s == NATS_OK)
			s = natsMsgHeader_Set(msg, "Eventsourced-Event-Type", PQgetvalue(res, i, 5));
		if (s == NATS_OK)
			s = js_PublishMsgAsync(js, &msg, NULL);
		natsMsg_Destroy(msg);
	}
	if (s == NATS_OK)
		s = js_PublishAsyncComplete(js, NULL);
	return s;
}

int
main(int argc, char **argv)
{
	natsConnection *nc = NULL;
	jsCtx	   *js = NULL;
	jsOptions	jo;
	PGconn	   *conn;
	PGresult   *res;
	const char *params[1];
	double		start;
	natsStatus	s;

	if (argc != 5)
	{
		fprintf(stderr, "usage: publisher CONNSTR NATS_URL STREAM N|--delete\n");
		return 2;
	}
	jsOptions_Init(&jo);
	jo.PublishAsync.MaxPending = 16384;
	jo.PublishAsync.StallWait = 5000;
	s = natsConnection_ConnectTo(&nc, argv[2]);
	if (s == NATS_OK)
		s = natsConnection_JetStream(&js, nc, &jo);
	if (s == NATS_OK && strcmp(argv[4], "--delete") == 0)
	{
		jsErrCode	jerr = 0;

		js_DeleteStream(js, argv[3], NULL, &jerr);
		return 0;
	}
	if (s == NATS_OK)
		s = fresh_stream(js, argv[3]);
	conn = PQconnectdb(argv[1]);
	params[0] = argv[4];
	res = PQexecParams(conn, LOAD_SQL, 1, NULL, params, NULL, NULL, 0);
	if (s != NATS_OK || PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		fprintf(stderr, "publisher: %s %s", natsStatus_GetText(s), PQerrorMessage(conn));
		return 1;
	}
	start = now();
	s = publish_all(js, res, argv[3]);
	if (s != NATS_OK)
	{
		fprintf(stderr, "publisher: %s\n", natsStatus_GetText(s));
		return 1;
	}
	printf("%.0f\n", PQntuples(res) / (now() - start));
	PQclear(res);
	PQfinish(conn);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return 0;
}
