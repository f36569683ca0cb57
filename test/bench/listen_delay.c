/*
 * listen_delay.c
 *		Commit-to-handler delay of a libpq client that follows the feed the
 *		way examples/projector does: LISTEN on "eventsourced", read
 *		events_by_type from its checkpoint when notified (and every
 *		POLL_MS anyway).  Each event's payload carries "t0", the epoch
 *		seconds at which it was appended; the delay is the time the client
 *		has the event minus t0.  Prints "count median_ms p99_ms".
 *
 *		Events appended in the first WARMUP seconds are not counted.
 *
 *		usage: listen_delay CONNSTR ENTITY_TYPE SECONDS WARMUP
 */
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "libpq-fe.h"

#define POLL_MS			100
#define MAX_DELAYS		1000000
#define PAGE			"1000"

static double delays[MAX_DELAYS];
static int	ndelays;
static double counted_from;		/* epoch seconds: events appended before are warm-up */

/* Wall-clock seconds, as the server's clock_timestamp() counts them */
static double
now_epoch(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return tv.tv_sec + tv.tv_usec / 1e6;
}

/* Run a query or exit with the server's message */
static PGresult *
query(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "listen_delay: %s", PQerrorMessage(conn));
		exit(1);
	}
	return res;
}

/* Read the feed from *checkpoint to its end, recording each event's delay */
static void
catch_up(PGconn *conn, const char *type, long long *checkpoint)
{
	for (;;)
	{
		char		after[32];
		const char *params[2] = {type, after};
		PGresult   *res;
		int			n;

		snprintf(after, sizeof(after), "%lld", *checkpoint);
		res = query(conn, "SELECT position, (payload->>'t0')::float8 "
					"FROM eventsourced.events_by_type($1, $2, " PAGE ")", 2, params);
		n = PQntuples(res);
		for (int i = 0; i < n && ndelays < MAX_DELAYS; i++)
		{
			double		t0 = atof(PQgetvalue(res, i, 1));

			if (t0 >= counted_from)
				delays[ndelays++] = (now_epoch() - t0) * 1000.0;
		}
		if (n > 0)
			*checkpoint = atoll(PQgetvalue(res, n - 1, 0));
		PQclear(res);
		if (n < atoi(PAGE))
			return;
	}
}

/* Sort order for doubles */
static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
	PGconn	   *conn;
	PGresult   *res;
	long long	checkpoint;
	double		until;
	const char *params[1];

	if (argc != 5)
	{
		fprintf(stderr, "usage: listen_delay CONNSTR ENTITY_TYPE SECONDS WARMUP\n");
		return 2;
	}
	counted_from = now_epoch() + atof(argv[4]);
	conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "listen_delay: %s", PQerrorMessage(conn));
		return 1;
	}
	PQclear(query(conn, "LISTEN eventsourced", 0, NULL));
	params[0] = argv[2];
	res = query(conn, "SELECT coalesce(max(position), 0) FROM eventsourced.events "
				"WHERE entity_type = $1", 1, params);
	checkpoint = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	until = now_epoch() + atof(argv[3]);
	while (now_epoch() < until)
	{
		struct pollfd pfd = {PQsocket(conn), POLLIN, 0};
		PGnotify   *note;

		(void) poll(&pfd, 1, POLL_MS);
		PQconsumeInput(conn);
		while ((note = PQnotifies(conn)) != NULL)
			PQfreemem(note);
		catch_up(conn, argv[2], &checkpoint);
	}
	PQfinish(conn);
	if (ndelays == 0)
	{
		printf("0 0 0\n");
		return 0;
	}
	qsort(delays, ndelays, sizeof(double), cmp_double);
	printf("%d %.2f %.2f\n", ndelays, delays[ndelays / 2],
		   delays[(int) floor((ndelays - 1) * 0.99)]);
	return 0;
}
