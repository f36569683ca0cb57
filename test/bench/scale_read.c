/*
 * scale_read.c
 *		Reads a whole feed page by page with libpq, as a client does, and
 *		prints "events seconds": either one server's read_all (resuming
 *		after the last row's position) or the proxy's read_all_shards
 *		(resuming with the last row's token).  Text format, every column.
 *
 *		usage: scale_read CONNSTR one|shards PAGE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libpq-fe.h"

#define RESUME_MAX	4096		/* longest position or token kept */

/* Seconds on a monotonic clock */
static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Read every page; the resume value is column 0 of the last row */
int
main(int argc, char **argv)
{
	const char *query;
	char		resume[RESUME_MAX] = "";
	long		events = 0;
	double		start;
	PGconn	   *conn;

	if (argc != 4 || (strcmp(argv[2], "one") != 0 && strcmp(argv[2], "shards") != 0))
	{
		fprintf(stderr, "usage: %s CONNSTR one|shards PAGE\n", argv[0]);
		return 2;
	}
	conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "%s", PQerrorMessage(conn));
		return 1;
	}
	if (strcmp(argv[2], "one") == 0)
	{
		query = "SELECT * FROM eventsourced.read_all($1::bigint, $2::integer)";
		strcpy(resume, "0");
	}
	else
		query = "SELECT * FROM eventsourced.read_all_shards($1, $2::integer)";
	start = now_seconds();
	for (;;)
	{
		const char *params[2] = {resume, argv[3]};
		PGresult   *res = PQexecParams(conn, query, 2, NULL, params, NULL, NULL, 0);
		int			rows;

		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			fprintf(stderr, "%s", PQerrorMessage(conn));
			return 1;
		}
		rows = PQntuples(res);
		if (rows == 0)
		{
			PQclear(res);
			break;
		}
		events += rows;
		if (strlen(PQgetvalue(res, rows - 1, 0)) >= RESUME_MAX)
		{
			fprintf(stderr, "resume value too long\n");
			return 1;
		}
		strcpy(resume, PQgetvalue(res, rows - 1, 0));
		PQclear(res);
	}
	printf("%ld %.3f\n", events, now_seconds() - start);
	PQfinish(conn);
	return 0;
}
