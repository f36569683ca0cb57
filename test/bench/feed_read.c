/*
 * feed_read.c
 *		Reads a whole entity type from the feed with libpq, as rows
 *		(events_by_type, text format) or as protobuf batches
 *		(events_by_type_pb, decoded with protobuf-c into an arena that is
 *		emptied after each batch), or, as the baseline, the same pages of
 *		rows from the plain table bench.plain_feed (a copy of the events
 *		indexed on (entity_type, position), as Message DB reads), and prints
 *		"events seconds bytes": the bytes are the result values plus the
 *		DataRow framing the server sends for them.
 *
 *		usage: feed_read CONNSTR ENTITY_TYPE rows|pb|plain BATCH
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libpq-fe.h"
#include "eventsourced.pb-c.h"

#define DATAROW_OVERHEAD	7		/* type byte, length, column count */
#define ARENA_ALIGN			8
#define COLUMN_OVERHEAD		4		/* length word per value */
#define ARENA_MAX_SPILLS	(1 << 20)	/* side allocations per batch */

/* Seconds on a monotonic clock */
static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A bump allocator for protobuf-c, emptied after each batch */
typedef struct Arena
{
	char	   *base;
	size_t		used,
				size;
	size_t		spilled;		/* bytes this batch had to malloc on the side */
	void	   *spill[ARENA_MAX_SPILLS];
	int			nspills;
} Arena;

/* Allocate from the arena; what does not fit is malloc'ed and counted */
static void *
arena_alloc(void *ctx, size_t n)
{
	Arena	   *a = (Arena *) ctx;
	void	   *p;

	n = (n + ARENA_ALIGN - 1) & ~(size_t) (ARENA_ALIGN - 1);
	if (a->used + n > a->size)
	{
		if (a->nspills == ARENA_MAX_SPILLS)
			return NULL;
		a->spilled += n;
		return a->spill[a->nspills++] = malloc(n);
	}
	p = a->base + a->used;
	a->used += n;
	return p;
}

/* Arena memory is released all at once, by arena_reset() */
static void
arena_free(void *ctx, void *p)
{
}

/* Empty the arena before a batch; grow it when the last batch did not fit */
static void
arena_reset(Arena *a)
{
	for (int i = 0; i < a->nspills; i++)
		free(a->spill[i]);
	if (a->base == NULL || a->spilled > 0)
	{
		a->size = (a->size + a->spilled) * 5 / 4;
		free(a->base);
		if ((a->base = malloc(a->size)) == NULL)
		{
			fprintf(stderr, "feed_read: out of memory\n");
			exit(1);
		}
	}
	a->used = a->spilled = 0;
	a->nspills = 0;
}

static Arena arena = {.size = 1 << 20};
static long long checksum;		/* keeps the decoding from being optimized away */
static ProtobufCAllocator arena_allocator = {arena_alloc, arena_free, &arena};

static int	plain_wanted;		/* the baseline's table exists only where it is read */

/* Prepare the page query of each format once, as a consumer would */
static void
prepare(PGconn *conn)
{
	static const char *const names[] = {"rows", "pb", "plain"};
	static const char *const sql[] = {
		"SELECT * FROM eventsourced.events_by_type($1, $2, $3)",
		"SELECT eventsourced.events_by_type_pb($1, $2, $3)",
		"SELECT position, entity_id, seq_no, event_type, payload, metadata, event_id, "
		"recorded_at, payload_bytes FROM bench.plain_feed "
		"WHERE entity_type = $1 AND position > $2 ORDER BY position LIMIT $3"
	};

	for (int i = 0; i < (plain_wanted ? 3 : 2); i++)
	{
		PGresult   *res = PQprepare(conn, names[i], sql[i], 3, NULL);

		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "feed_read: %s", PQerrorMessage(conn));
			exit(1);
		}
		PQclear(res);
	}
}

/* Run one page query (a prepared statement) or exit with the server's message */
static PGresult *
page(PGconn *conn, const char *stmt, const char *type, long long after,
	 const char *batch, int binary)
{
	char		afterbuf[32];
	const char *params[3] = {type, afterbuf, batch};
	PGresult   *res;

	snprintf(afterbuf, sizeof(afterbuf), "%lld", after);
	res = PQexecPrepared(conn, stmt, 3, params, NULL, NULL, binary);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		fprintf(stderr, "feed_read: %s", PQerrorMessage(conn));
		exit(1);
	}
	return res;
}

/* What a consumer gets from a row: the values decoded from their text form */
static long long
decode_row(PGresult *res, int r)
{
	long long	check = atoll(PQgetvalue(res, r, 0)) + atoll(PQgetvalue(res, r, 2));
	int			year, month, day, hour, minute;
	double		second;

	/* payload (jsonb text) and metadata are used as JSON text; bytes unescaped */
	check += PQgetlength(res, r, 4) + PQgetlength(res, r, 5);
	if (!PQgetisnull(res, r, 8))
	{
		size_t		len;
		unsigned char *bytes = PQunescapeBytea((const unsigned char *) PQgetvalue(res, r, 8), &len);

		check += (long long) len;
		PQfreemem(bytes);
	}
	if (sscanf(PQgetvalue(res, r, 7), "%d-%d-%d %d:%d:%lf", &year, &month, &day,
			   &hour, &minute, &second) == 6)
		check += day;
	return check;
}

/* One page as rows; returns the number of events, advances *after */
static int
read_rows(PGconn *conn, const char *type, long long *after, const char *batch, long long *bytes)
{
	PGresult   *res = page(conn, plain_wanted ? "plain" : "rows", type, *after, batch, 0);
	int			n = PQntuples(res);
	int			ncols = PQnfields(res);

	for (int r = 0; r < n; r++)
	{
		checksum += decode_row(res, r);
		*bytes += DATAROW_OVERHEAD;
		for (int c = 0; c < ncols; c++)
			*bytes += COLUMN_OVERHEAD + PQgetlength(res, r, c);
	}
	if (n > 0)
		*after = atoll(PQgetvalue(res, n - 1, 0));
	PQclear(res);
	return n;
}

/* One page as an EventBatch; returns the number of events, advances *after */
static int
read_pb(PGconn *conn, const char *type, long long *after, const char *batch, long long *bytes)
{
	PGresult   *res = page(conn, "pb", type, *after, batch, 1);
	Eventsourced__EventBatch *msg;
	int			n;

	*bytes += DATAROW_OVERHEAD + COLUMN_OVERHEAD + PQgetlength(res, 0, 0);
	arena_reset(&arena);
	msg = eventsourced__event_batch__unpack(&arena_allocator, PQgetlength(res, 0, 0),
											(const uint8_t *) PQgetvalue(res, 0, 0));
	if (msg == NULL)
	{
		fprintf(stderr, "feed_read: cannot decode EventBatch\n");
		exit(1);
	}
	n = (int) msg->n_events;
	for (int i = 0; i < n; i++)
		checksum += (long long) msg->events[i]->position + msg->events[i]->payload.len;
	*after = (long long) msg->last_position;
	PQclear(res);
	return n;
}

int
main(int argc, char **argv)
{
	PGconn	   *conn;
	long long	after = 0,
				events = 0,
				bytes = 0;
	int			pb;
	double		start;

	if (argc != 5)
	{
		fprintf(stderr, "usage: feed_read CONNSTR ENTITY_TYPE rows|pb|plain BATCH\n");
		return 2;
	}
	pb = strcmp(argv[3], "pb") == 0;
	plain_wanted = strcmp(argv[3], "plain") == 0;
	conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "feed_read: %s", PQerrorMessage(conn));
		return 1;
	}
	prepare(conn);
	/* a first pass warms this backend (its mappings of shared buffers); the second is measured */
	for (int pass = 0; pass < 2; pass++)
	{
		after = events = bytes = 0;
		start = now_seconds();
		for (;;)
		{
			int			n = pb ? read_pb(conn, argv[2], &after, argv[4], &bytes)
				: read_rows(conn, argv[2], &after, argv[4], &bytes);

			if (n == 0)
				break;
			events += n;
		}
	}
	printf("%lld %.3f %lld\n", events, now_seconds() - start, bytes);
	if (checksum == 42)
		fprintf(stderr, "unlikely checksum\n");
	PQfinish(conn);
	return 0;
}
