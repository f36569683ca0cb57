/*
 * scale_read.c
 *		Reads a whole feed page by page with libpq, as a client does, and
 *		prints "events seconds": one server's read_all (resuming after the
 *		last row's position), the proxy's read_all_shards (resuming with the
 *		last row's token), in text format, every column; or their protobuf
 *		forms, one bytea per page in binary format: read_all_pb (resuming at
 *		the EventBatch's last_position) and read_all_shards_pb (resuming
 *		with the ShardBatch's token).  The protobuf pages are walked field by
 *		field (events counted, not decoded).
 *
 *		usage: scale_read CONNSTR one|shards|one_pb|shards_pb PAGE
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libpq-fe.h"

#define RESUME_MAX	4096		/* longest position or token kept */

/* The resume value and the events of one page */
typedef struct Page
{
	long		events;
	char		resume[RESUME_MAX];
} Page;

/* Seconds on a monotonic clock */
static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One varint at *p (before end); false when truncated or too long */
static bool
get_varint(const unsigned char **p, const unsigned char *end, uint64_t *value)
{
	*value = 0;
	for (int shift = 0; shift < 64 && *p < end; shift += 7)
	{
		unsigned char b = *(*p)++;

		*value |= (uint64_t) (b & 127) << shift;
		if (b < 128)
			return true;
	}
	return false;
}

/*
 * Counts the events (field 1) of an EventBatch or ShardBatch and takes its
 * resume value: last_position (field 2) or the token (field 3).
 */
static bool
walk_batch(const unsigned char *p, size_t len, Page *page)
{
	const unsigned char *end = p + len;

	page->events = 0;
	while (p < end)
	{
		uint64_t	tag,
					value;

		if (!get_varint(&p, end, &tag))
			return false;
		if ((tag & 7) == 0 && get_varint(&p, end, &value))
		{
			if (tag >> 3 == 2)
				snprintf(page->resume, RESUME_MAX, "%llu", (unsigned long long) value);
			continue;
		}
		if ((tag & 7) != 2 || !get_varint(&p, end, &value) || value > (uint64_t) (end - p))
			return false;
		if (tag >> 3 == 1)
			page->events++;
		else if (tag >> 3 == 3 && value < RESUME_MAX)
			snprintf(page->resume, RESUME_MAX, "%.*s", (int) value, (const char *) p);
		else if (tag >> 3 == 3)
			return false;
		p += value;
	}
	return true;
}

/* Reads one page after page->resume; false on an error (printed) */
static bool
read_page(PGconn *conn, const char *mode, const char *size, Page *page)
{
	static const char *const modes[][2] = {
		{"one", "SELECT * FROM eventsourced.read_all($1::bigint, $2::integer)"},
		{"shards", "SELECT * FROM eventsourced.read_all_shards($1, $2::integer)"},
		{"one_pb", "SELECT eventsourced.read_all_pb($1::bigint, $2::integer)"},
		{"shards_pb", "SELECT eventsourced.read_all_shards_pb($1, $2::integer)"},
	};
	const char *params[2] = {page->resume, size};
	bool		pb = strstr(mode, "_pb") != NULL;
	const char *query = NULL;
	PGresult   *res;
	bool		ok = true;

	for (int i = 0; i < 4; i++)
		if (strcmp(mode, modes[i][0]) == 0)
			query = modes[i][1];
	res = PQexecParams(conn, query, 2, NULL, params, NULL, NULL, pb ? 1 : 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		fprintf(stderr, "%s", PQerrorMessage(conn));
		ok = false;
	}
	else if (pb)
	{
		ok = PQntuples(res) == 1 &&
			walk_batch((const unsigned char *) PQgetvalue(res, 0, 0),
					   PQgetlength(res, 0, 0), page);
		if (!ok)
			fprintf(stderr, "malformed batch\n");
	}
	else if ((page->events = PQntuples(res)) > 0)
	{
		ok = strlen(PQgetvalue(res, page->events - 1, 0)) < RESUME_MAX;
		if (ok)
			strcpy(page->resume, PQgetvalue(res, page->events - 1, 0));
		else
			fprintf(stderr, "resume value too long\n");
	}
	PQclear(res);
	return ok;
}

/* Read every page until an empty one */
int
main(int argc, char **argv)
{
	Page		page;
	long		events = 0;
	double		start;
	PGconn	   *conn;

	if (argc != 4 || (strcmp(argv[2], "one") != 0 && strcmp(argv[2], "shards") != 0 &&
					  strcmp(argv[2], "one_pb") != 0 && strcmp(argv[2], "shards_pb") != 0))
	{
		fprintf(stderr, "usage: %s CONNSTR one|shards|one_pb|shards_pb PAGE\n", argv[0]);
		return 2;
	}
	conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "%s", PQerrorMessage(conn));
		return 1;
	}
	strcpy(page.resume, strncmp(argv[2], "one", 3) == 0 ? "0" : "");
	start = now_seconds();
	do
	{
		if (!read_page(conn, argv[2], argv[3], &page))
			return 1;
		events += page.events;
	} while (page.events > 0);
	printf("%ld %.3f\n", events, now_seconds() - start);
	PQfinish(conn);
	return 0;
}
