/*-------------------------------------------------------------------------
 *
 * requesters.c
 *		Commands from THREADS concurrent requesters for SECONDS, either over
 *		NATS request/reply (through eventsourced-nats --commands) or
 *		through libpq (SELECT eventsourced.handle_command(...)): the same
 *		command on one entity per requester.  Prints commands/s.
 *
 * Usage: requesters nats NATS_URL PREFIX THREADS SECONDS
 *        requesters pq CONNSTR - THREADS SECONDS
 *
 *-------------------------------------------------------------------------
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include <nats/nats.h>
#include "libpq-fe.h"

typedef struct Requester
{
	pthread_t	thread;
	int			id;
	long		done;
	long		failed;
} Requester;

static const char *mode, *target, *prefix;
static double seconds;

/* Seconds on the monotonic clock. */
static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU seconds this process used (user and system). */
static double
cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* One requester over NATS, with a connection of its own. */
static void
run_nats(Requester *r)
{
	natsConnection *nc = NULL;
	char		subject[200];
	double		end = now() + seconds;

	snprintf(subject, sizeof(subject), "%s.bcmd.r%d.Bump", prefix, r->id);
	if (natsConnection_ConnectTo(&nc, target) != NATS_OK)
		return;
	while (now() < end)
	{
		natsMsg    *reply = NULL;

		if (natsConnection_RequestString(&reply, nc, subject, "{\"n\": 1}", 5000) == NATS_OK &&
			strstr(natsMsg_GetData(reply), "\"accepted\":true"))
			r->done++;
		else
			r->failed++;
		natsMsg_Destroy(reply);
	}
	natsConnection_Destroy(nc);
}

/* One requester through libpq. */
static void
run_pq(Requester *r)
{
	PGconn	   *conn = PQconnectdb(target);
	char		id[32];
	const char *params[] = {id};
	double		end = now() + seconds;

	snprintf(id, sizeof(id), "p%d", r->id);
	while (PQstatus(conn) == CONNECTION_OK && now() < end)
	{
		PGresult   *res = PQexecParams(conn,
									   "SELECT accepted FROM eventsourced.handle_command('bcmd', $1, 'Bump', '{\"n\": 1}')",
									   1, NULL, params, NULL, NULL, 0);

		if (PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "t") == 0)
			r->done++;
		else
			r->failed++;
		PQclear(res);
	}
	PQfinish(conn);
}

static void *
requester_main(void *arg)
{
	Requester  *r = arg;

	if (strcmp(mode, "nats") == 0)
		run_nats(r);
	else
		run_pq(r);
	return NULL;
}

int
main(int argc, char **argv)
{
	int			threads;
	long		done = 0, failed = 0;
	Requester  *rs;
	double		start;

	if (argc != 6)
	{
		fprintf(stderr, "usage: requesters nats|pq TARGET PREFIX THREADS SECONDS\n");
		return 2;
	}
	mode = argv[1];
	target = argv[2];
	prefix = argv[3];
	threads = atoi(argv[4]);
	seconds = atof(argv[5]);
	rs = calloc(threads, sizeof(Requester));
	start = now();
	for (int i = 0; i < threads; i++)
	{
		rs[i].id = i;
		pthread_create(&rs[i].thread, NULL, requester_main, &rs[i]);
	}
	for (int i = 0; i < threads; i++)
	{
		pthread_join(rs[i].thread, NULL);
		done += rs[i].done;
		failed += rs[i].failed;
	}
	if (failed > 0)
		fprintf(stderr, "requesters: %ld failed\n", failed);
	printf("%.0f\n", done / (now() - start));
	if (getenv("REQUESTERS_CPU"))
		fprintf(stderr, "requesters: %.0f us of CPU per command\n", cpu_seconds() * 1e6 / (done ? done : 1));
	return 0;
}
