/*-------------------------------------------------------------------------
 *
 * latency.c
 *		Commit -> message stored in JetStream, with the relay running: one
 *		client appends RATE events/s to one entity for SECONDS and notes
 *		when each commit returned; a JetStream subscription to the entity's
 *		subject reads each message's stored timestamp (the server's clock,
 *		the same machine's).  Prints the percentiles in milliseconds.
 *
 * Usage: latency CONNSTR NATS_URL STREAM RATE SECONDS
 *
 *-------------------------------------------------------------------------
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>
#include "libpq-fe.h"

static int64_t *committed;		/* ns, by seq_no */
static int64_t *stored;			/* ns, by seq_no */
static long total;

/* Nanoseconds on the real-time clock (the one JetStream stamps with). */
static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Notes the stored time of each message by its Eventsourced-Seq-No. */
static void
on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	jsMsgMetaData *meta = NULL;
	const char *seq = NULL;

	(void) nc;
	(void) sub;
	(void) closure;
	if (natsMsg_GetMetaData(&meta, msg) == NATS_OK &&
		natsMsgHeader_Get(msg, "Eventsourced-Seq-No", &seq) == NATS_OK)
	{
		long		i = atol(seq);

		if (i >= 1 && i <= total)
			stored[i] = meta->Timestamp;
	}
	jsMsgMetaData_Destroy(meta);
	natsMsg_Destroy(msg);
}

static int
compare_int64(const void *a, const void *b)
{
	int64_t		x = *(const int64_t *) a, y = *(const int64_t *) b;

	return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
	natsConnection *nc = NULL;
	natsSubscription *sub = NULL;
	jsCtx	   *js = NULL;
	jsSubOptions so;
	jsErrCode	jerr = 0;
	char		subject[300];
	char		entity[32];
	const char *params[] = {entity};
	int64_t    *lat;
	long		n = 0, rate;
	int64_t		start;
	PGconn	   *conn;

	if (argc != 6)
	{
		fprintf(stderr, "usage: latency CONNSTR NATS_URL STREAM RATE SECONDS\n");
		return 2;
	}
	rate = atol(argv[4]);
	total = rate * atol(argv[5]);
	committed = calloc(total + 1, sizeof(int64_t));
	stored = calloc(total + 1, sizeof(int64_t));
	lat = calloc(total + 1, sizeof(int64_t));
	conn = PQconnectdb(argv[1]);
	PQclear(PQexec(conn, "SELECT eventsourced.append('lat', 'l1', NULL, 'Warm', '{}')"));
	snprintf(entity, sizeof(entity), "l%d", (int) getpid());
	snprintf(subject, sizeof(subject), "%s.lat.%s", argv[3], entity);
	jsSubOptions_Init(&so);
	so.Stream = argv[3];
	so.Config.DeliverPolicy = js_DeliverNew;
	so.Config.AckPolicy = js_AckNone;
	if (natsConnection_ConnectTo(&nc, argv[2]) != NATS_OK ||
		natsConnection_JetStream(&js, nc, NULL) != NATS_OK ||
		js_Subscribe(&sub, js, subject, on_msg, NULL, NULL, &so, &jerr) != NATS_OK ||
		PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "latency: cannot connect or subscribe\n");
		return 1;
	}
	start = now_ns();
	for (long i = 1; i <= total; i++)
	{
		int64_t		due = start + (i - 1) * (1000000000 / rate);
		struct timespec ts;
		PGresult   *res;

		while (now_ns() < due)
		{
			ts.tv_sec = 0;
			ts.tv_nsec = 100000;
			nanosleep(&ts, NULL);
		}
		res = PQexecParams(conn, "SELECT eventsourced.append('lat', $1, NULL, 'Tick', '{}')",
						   1, NULL, params, NULL, NULL, 0);
		committed[i] = now_ns();
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			fprintf(stderr, "latency: %s", PQerrorMessage(conn));
		PQclear(res);
	}
	nats_Sleep(2000);
	for (long i = 1; i <= total; i++)
		if (stored[i] != 0)
			lat[n++] = stored[i] - committed[i];
	qsort(lat, n, sizeof(int64_t), compare_int64);
	if (n == 0)
	{
		fprintf(stderr, "latency: no message arrived\n");
		return 1;
	}
	printf("%ld of %ld stored; commit->stored ms: p50 %.2f p99 %.2f max %.2f (achieved %.0f appends/s)\n",
		   n, total, lat[n / 2] / 1e6, lat[(n * 99) / 100] / 1e6, lat[n - 1] / 1e6,
		   total / ((committed[total] - start) / 1e9));
	natsSubscription_Destroy(sub);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	PQfinish(conn);
	return 0;
}
