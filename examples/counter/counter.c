/*
 * counter.c
 *		The counter example's runner: sends Increase/Decrease commands to
 *		many counter entities concurrently through eventsourced.handle_command(),
 *		then rebuilds every counter from its snapshot and the events after it
 *		and checks the result.
 *
 * Usage: counter [--entities N] [--events M] [--snapshot-after K] [--connstr STR]
 * Each entity gets M commands, alternately Increase {"n": i + 1} and
 * Decrease {"n": i}, so each one ends at a known value.  Entities are spread
 * over at most MAX_THREADS threads with one connection each; a thread
 * sends its entities' commands round-robin.  "<id>: N events persisted" is
 * printed every PROGRESS_EVERY events of a counter and after its last one.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libpq-fe.h"

#define MAX_THREADS			16
#define PROGRESS_EVERY		5000
#define DEFAULT_ENTITIES	10
#define DEFAULT_EVENTS		2000
#define DEFAULT_SNAPSHOT_AFTER 100
#define MAX_RUN_ID_LEN		32
#define MAX_ID_LEN			(MAX_RUN_ID_LEN + 16)

/* Command-line settings */
typedef struct Options
{
	long		entities;
	long		events;
	long		snapshot_after;
	const char *connstr;
} Options;

struct Worker;

/* One step of a worker: command i to counter e, or rebuilding counter e */
typedef int (*StepFn) (PGconn *conn, struct Worker *w, int e, long i);

/* One thread's share of the work */
typedef struct Worker
{
	const Options *opt;
	StepFn		step;
	long		rounds;
	char		run_id[MAX_RUN_ID_LEN];
	int			first;			/* its entities: first, first + stride, ... */
	int			stride;
	int			failed;
	long		rebuilt_events; /* events folded after snapshots */
} Worker;

static const char *const command_sql =
"SELECT accepted, seq_no, rejection FROM eventsourced.handle_command('counter', $1, $2, $3::jsonb)";
static const char *const snapshot_sql =
"SELECT seq_no, state->>'value' FROM eventsourced.load_snapshot('counter', $1)";
static const char *const events_sql =
"SELECT event_type, payload->>'n' FROM eventsourced.events_by_id('counter', $1, $2)";

/* Seconds on a monotonic clock */
static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Print usage and exit */
static void
usage(const char *prog, int status)
{
	fprintf(status ? stderr : stdout,
			"usage: %s [--entities N] [--events M] [--snapshot-after K] [--connstr STR]\n"
			"  --entities N        counters to create (default %d)\n"
			"  --events M          commands, hence events, per counter (default %d)\n"
			"  --snapshot-after K  snapshot every K events (default %d)\n"
			"  --connstr STR       libpq connection string (default: from the environment)\n",
			prog, DEFAULT_ENTITIES, DEFAULT_EVENTS, DEFAULT_SNAPSHOT_AFTER);
	exit(status);
}

/* A positive number option */
static long
parse_count(const char *prog, const char *name, const char *value)
{
	char	   *end;
	long		n;

	errno = 0;
	n = value ? strtol(value, &end, 10) : 0;
	if (value == NULL || errno != 0 || *end != '\0' || n < 1 || n > 100000000)
	{
		fprintf(stderr, "%s: %s needs a number from 1 to 100000000\n", prog, name);
		usage(prog, 2);
	}
	return n;
}

/* Read the command line into opt */
static void
parse_options(int argc, char **argv, Options *opt)
{
	opt->entities = DEFAULT_ENTITIES;
	opt->events = DEFAULT_EVENTS;
	opt->snapshot_after = DEFAULT_SNAPSHOT_AFTER;
	opt->connstr = "";
	for (int i = 1; i < argc; i++)
	{
		const char *value = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(argv[i], "--help") == 0)
			usage(argv[0], 0);
		else if (strcmp(argv[i], "--entities") == 0)
			opt->entities = parse_count(argv[0], argv[i], value);
		else if (strcmp(argv[i], "--events") == 0)
			opt->events = parse_count(argv[0], argv[i], value);
		else if (strcmp(argv[i], "--snapshot-after") == 0)
			opt->snapshot_after = parse_count(argv[0], argv[i], value);
		else if (strcmp(argv[i], "--connstr") == 0 && value != NULL)
			opt->connstr = value;
		else
			usage(argv[0], 2);
		i++;
	}
}

/* A connection, or NULL after printing why not */
static PGconn *
connect_db(const char *connstr)
{
	PGconn	   *conn = PQconnectdb(connstr);

	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "connection failed: %s", PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/* Run one statement with text parameters; NULL after printing the error */
static PGresult *
run(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "query failed: %s", PQerrorMessage(conn));
		PQclear(res);
		return NULL;
	}
	return res;
}

/* The entity id of counter number e in this run */
static void
entity_id(const Worker *w, int e, char *buf)
{
	snprintf(buf, MAX_ID_LEN, "%s-%d", w->run_id, e);
}

/* Command number i of a counter: Increase i/2 + 1 when i is even, else Decrease i/2 */
static void
command_args(long i, const char **command, char *args)
{
	*command = (i % 2 == 0) ? "Increase" : "Decrease";
	snprintf(args, 64, "{\"n\": %ld}", (i % 2 == 0) ? i / 2 + 1 : i / 2);
}

/* The value a counter holds after m commands */
static int64_t
expected_value(long m)
{
	return m / 2 + (m % 2 == 1 ? m / 2 + 1 : 0);
}

/* Send command number i to counter e; 0 on success */
static int
send_command(PGconn *conn, Worker *w, int e, long i)
{
	char		id[MAX_ID_LEN];
	char		args[64];
	const char *params[3] = {id, NULL, args};
	PGresult   *res;
	int			ok;

	entity_id(w, e, id);
	command_args(i, &params[1], args);
	res = run(conn, command_sql, 3, params);
	if (res == NULL)
		return 1;
	ok = strcmp(PQgetvalue(res, 0, 0), "t") == 0 &&
		strtol(PQgetvalue(res, 0, 1), NULL, 10) == i + 1;
	if (!ok)
		fprintf(stderr, "%s: command %ld not accepted as seq_no %ld: %s\n",
				id, i + 1, i + 1, PQgetvalue(res, 0, 2));
	PQclear(res);
	if (ok && ((i + 1) % PROGRESS_EVERY == 0 || i + 1 == w->opt->events))
		printf("%s: %ld events persisted\n", id, i + 1);
	return !ok;
}

/* Fold the events after the snapshot into value; -1 on failure */
static int
fold_events(PGconn *conn, Worker *w, const char *id, int64_t seq_no, int64_t *value)
{
	char		from[32];
	const char *params[2] = {id, from};
	PGresult   *res;

	snprintf(from, sizeof(from), "%" PRId64, seq_no + 1);
	res = run(conn, events_sql, 2, params);
	if (res == NULL)
		return -1;
	for (int r = 0; r < PQntuples(res); r++)
	{
		int64_t		n = strtoll(PQgetvalue(res, r, 1), NULL, 10);

		*value += strcmp(PQgetvalue(res, r, 0), "Increased") == 0 ? n : -n;
	}
	w->rebuilt_events += PQntuples(res);
	PQclear(res);
	return 0;
}

/* Rebuild counter e from its snapshot and later events and check its value */
static int
rebuild_counter(PGconn *conn, Worker *w, int e, long round)
{
	char		id[MAX_ID_LEN];
	const char *params[1] = {id};
	PGresult   *res;
	int64_t		seq_no = 0;
	int64_t		value = 0;

	(void) round;
	entity_id(w, e, id);
	res = run(conn, snapshot_sql, 1, params);
	if (res == NULL)
		return 1;
	if (PQntuples(res) == 1)
	{
		seq_no = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		value = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	}
	PQclear(res);
	if (fold_events(conn, w, id, seq_no, &value) != 0)
		return 1;
	if (value != expected_value(w->opt->events))
	{
		fprintf(stderr, "%s: rebuilt value %" PRId64 ", expected %" PRId64 "\n",
				id, value, expected_value(w->opt->events));
		return 1;
	}
	return 0;
}

/*
 * Thread body: w->step for each of the worker's counters, round-robin,
 * w->rounds times, on one connection; stops at the first failure.
 */
static void *
work(void *arg)
{
	Worker	   *w = arg;
	PGconn	   *conn = connect_db(w->opt->connstr);

	if (conn == NULL)
	{
		w->failed = 1;
		return NULL;
	}
	for (long i = 0; i < w->rounds && !w->failed; i++)
		for (int e = w->first; e < w->opt->entities && !w->failed; e += w->stride)
			w->failed = w->step(conn, w, e, i);
	PQfinish(conn);
	return NULL;
}

/* Run step rounds times for every counter, one thread per worker; the number of failed workers */
static int
run_workers(Worker *workers, int nworkers, StepFn step, long rounds)
{
	pthread_t	threads[MAX_THREADS];
	int			failed = 0;

	for (int t = 0; t < nworkers; t++)
	{
		workers[t].step = step;
		workers[t].rounds = rounds;
	}
	for (int t = 0; t < nworkers; t++)
		if (pthread_create(&threads[t], NULL, work, &workers[t]) != 0)
		{
			fprintf(stderr, "cannot start thread\n");
			exit(1);
		}
	for (int t = 0; t < nworkers; t++)
	{
		pthread_join(threads[t], NULL);
		failed += workers[t].failed;
	}
	return failed;
}

/* Register the counter with the requested snapshot interval; 0 on success */
static int
setup(const Options *opt)
{
	PGconn	   *conn = connect_db(opt->connstr);
	char		k[32];
	const char *params[1] = {k};
	PGresult   *res;

	if (conn == NULL)
		return 1;
	snprintf(k, sizeof(k), "%ld", opt->snapshot_after);
	res = run(conn, "SELECT eventsourced.register_entity('counter', "
			  "'counter.apply(jsonb, text, jsonb)', '{\"value\": 0}', $1::integer)", 1, params);
	PQclear(res);
	PQfinish(conn);
	return res == NULL;
}

int
main(int argc, char **argv)
{
	Options		opt;
	Worker		workers[MAX_THREADS];
	int			nworkers;
	double		start;
	double		secs;
	long		rebuilt = 0;
	char		run_id[MAX_RUN_ID_LEN];

	parse_options(argc, argv, &opt);
	if (setup(&opt) != 0)
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	nworkers = opt.entities < MAX_THREADS ? (int) opt.entities : MAX_THREADS;
	snprintf(run_id, MAX_RUN_ID_LEN, "run%ld.%d", (long) time(NULL) % 100000000, (int) getpid());
	for (int t = 0; t < nworkers; t++)
	{
		workers[t] = (Worker) {&opt, NULL, 0, "", t, nworkers, 0, 0};
		memcpy(workers[t].run_id, run_id, MAX_RUN_ID_LEN);
	}

	printf("Sending %ld commands to each of %ld counters (%d connections, snapshot every %ld events) ...\n",
		   opt.events, opt.entities, nworkers, opt.snapshot_after);
	start = now_seconds();
	if (run_workers(workers, nworkers, send_command, opt.events) != 0)
		return 1;
	secs = now_seconds() - start;
	printf("Duration for sending %ld commands to each of %ld counters: %.3f s (%.0f events/s)\n",
		   opt.events, opt.entities, secs, opt.events * opt.entities / secs);

	printf("Rebuilding the counters from snapshots and events ...\n");
	start = now_seconds();
	if (run_workers(workers, nworkers, rebuild_counter, 1) != 0)
		return 1;
	secs = now_seconds() - start;
	for (int t = 0; t < nworkers; t++)
		rebuilt += workers[t].rebuilt_events;
	printf("Duration for rebuilding %ld counters with %ld events each: %.3f s "
		   "(%ld events folded after snapshots); every value is %" PRId64 " as expected\n",
		   opt.entities, opt.events, secs, rebuilt, expected_value(opt.events));
	return 0;
}
