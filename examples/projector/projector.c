/*-------------------------------------------------------------------------
 *
 * projector.c
 *		A read model outside the event store: the live total of every
 *		counter, kept from the eventsourced feed exactly once.
 *
 * The projector pages through eventsourced.events_by_type() in the source
 * database and applies each batch to the target database in one transaction
 * that also moves the checkpoint (the last position applied).  The read
 * model and the checkpoint therefore commit together: after a crash the
 * projector reloads the checkpoint and goes on, with no event applied twice
 * and none missed.  Commit notifications on channel "eventsourced" only
 * wake it early; it polls anyway, so a lost notification only delays it.
 *
 * With --sharded the source is a proxy database (eventsourced_proxy, see
 * docs/scale-out.md): the projector pages through events_by_type_shards()
 * and its checkpoint is the resume token, which carries one position per
 * shard server; it is claimed and stored in the same target transaction as
 * the batch.  The proxy relays no notifications, so it polls.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libpq-fe.h"

/* Defaults and limits of the options. */
#define DEFAULT_ENTITY_TYPE		"counter"
#define DEFAULT_NAME			"projector"
#define DEFAULT_POLL_MS			1000
#define MAX_POLL_MS				3600000 /* an hour */
#define DEFAULT_BATCH			1000
#define MAX_BATCH				100000
#define DEFAULT_MAX_RETRIES		10
#define MAX_RETRIES_LIMIT		1000
#define MAX_BATCHES_LIMIT		1000000000L

/* Reconnect backoff: doubles after each failure, up to a ceiling. */
#define BACKOFF_FIRST_MS		100
#define BACKOFF_MAX_MS			5000

/* Room for a bigint or an integer as decimal text. */
#define NUMBER_TEXT_LEN			32

/* The longest resume token kept (a position per server: far more room than
 * 1,024 servers need). */
#define MAX_CHECKPOINT_LEN		65536

/* Exit status for a bad command line. */
#define EXIT_USAGE				2

/* The channel the extension notifies after commits that appended. */
#define NOTIFY_CHANNEL			"eventsourced"

/* The statements; data always travels as parameters. */
#define LISTEN_SQL "LISTEN " NOTIFY_CHANNEL
#define QUIET_SQL "SET client_min_messages = warning"
#define CREATE_CHECKPOINT_SQL \
	"CREATE TABLE IF NOT EXISTS projector_checkpoint (" \
	" name text PRIMARY KEY, position bigint NOT NULL)"
#define CREATE_SHARD_CHECKPOINT_SQL \
	"CREATE TABLE IF NOT EXISTS projector_shard_checkpoint (" \
	" name text PRIMARY KEY, token text NOT NULL)"
#define CREATE_TOTALS_SQL \
	"CREATE TABLE IF NOT EXISTS projector_totals (" \
	" entity_id text PRIMARY KEY, total bigint NOT NULL, events bigint NOT NULL)"
#define INSERT_CHECKPOINT_SQL \
	"INSERT INTO projector_checkpoint (name, position) VALUES ($1, 0)" \
	" ON CONFLICT (name) DO NOTHING"
#define INSERT_SHARD_CHECKPOINT_SQL \
	"INSERT INTO projector_shard_checkpoint (name, token) VALUES ($1, '')" \
	" ON CONFLICT (name) DO NOTHING"
#define LOAD_CHECKPOINT_SQL \
	"SELECT position FROM projector_checkpoint WHERE name = $1"
#define LOAD_SHARD_CHECKPOINT_SQL \
	"SELECT token FROM projector_shard_checkpoint WHERE name = $1"
#define CLAIM_CHECKPOINT_SQL \
	"UPDATE projector_checkpoint SET position = $3" \
	" WHERE name = $1 AND position = $2"
#define CLAIM_SHARD_CHECKPOINT_SQL \
	"UPDATE projector_shard_checkpoint SET token = $3" \
	" WHERE name = $1 AND token = $2"
#define UPSERT_TOTAL_SQL \
	"INSERT INTO projector_totals AS t (entity_id, total, events)" \
	" VALUES ($1, $2, 1) ON CONFLICT (entity_id) DO UPDATE" \
	" SET total = t.total + excluded.total, events = t.events + 1"
#define DELTA_SQL \
	" CASE e.event_type WHEN 'Increased' THEN (e.payload->>'n')::bigint" \
	" WHEN 'Decreased' THEN -(e.payload->>'n')::bigint ELSE 0 END"
#define READ_BATCH_SQL \
	"SELECT e.position, e.entity_id," DELTA_SQL \
	" FROM eventsourced.events_by_type($1, $2, $3) e"
#define READ_SHARD_BATCH_SQL \
	"SELECT e.token, e.entity_id," DELTA_SQL \
	" FROM eventsourced.events_by_type_shards($1, $2, $3) e"

/* Columns of READ_BATCH_SQL and READ_SHARD_BATCH_SQL. */
enum
{
	COL_CHECKPOINT,				/* position, or the token after the row */
	COL_ENTITY_ID,
	COL_DELTA
};

/* The statements of a feed: one server's, or a proxy's across shards. */
typedef struct FeedSql
{
	const char *create_checkpoint;
	const char *insert_checkpoint;
	const char *load_checkpoint;
	const char *claim_checkpoint;
	const char *read_batch;
} FeedSql;

static const FeedSql single_feed = {
	CREATE_CHECKPOINT_SQL, INSERT_CHECKPOINT_SQL, LOAD_CHECKPOINT_SQL,
	CLAIM_CHECKPOINT_SQL, READ_BATCH_SQL
};

static const FeedSql sharded_feed = {
	CREATE_SHARD_CHECKPOINT_SQL, INSERT_SHARD_CHECKPOINT_SQL,
	LOAD_SHARD_CHECKPOINT_SQL, CLAIM_SHARD_CHECKPOINT_SQL, READ_SHARD_BATCH_SQL
};

/* What one turn of the main loop leads to. */
typedef enum Outcome
{
	OUTCOME_OK,					/* progress, or a wait that ended: go on */
	OUTCOME_RETRY,				/* a connection or statement failed: reconnect */
	OUTCOME_DONE,				/* finished as asked (idle, batch limit) */
	OUTCOME_FATAL				/* cannot go on: exit non-zero */
} Outcome;

typedef struct Options
{
	const char *source;			/* conninfo of the event store */
	const char *target;			/* conninfo of the read model */
	const char *entity_type;
	const char *name;			/* checkpoint name, also application_name */
	long		poll_ms;
	long		batch;
	long		max_retries;	/* consecutive failures tolerated */
	long		max_batches;	/* 0: no limit */
	bool		exit_when_idle;
	bool		verbose;
	bool		sharded;		/* the source is an eventsourced_proxy */
} Options;

typedef struct Projector
{
	Options		opt;
	PGconn	   *source;
	PGconn	   *target;
	const FeedSql *sql;			/* single_feed or sharded_feed */
	char		checkpoint[MAX_CHECKPOINT_LEN]; /* last position or token applied */
	long		batches;		/* batches applied by this process */
} Projector;

static volatile sig_atomic_t stop_requested = 0;

/* Lets SIGINT/SIGTERM end the loop after the current batch. */
static void
handle_stop_signal(int signo)
{
	(void) signo;
	stop_requested = 1;
}

/* Installs the stop handlers without SA_RESTART, so that a wait ends early. */
static void
install_signal_handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handle_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

/* Tells how to call the program. */
static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: projector --source CONNSTR --target CONNSTR [options]\n"
			"Keeps projector_totals (live total per counter) in the target\n"
			"database from the eventsourced feed of the source database.\n\n"
			"  --type ENTITY_TYPE   entity type to follow (default %s)\n"
			"  --name NAME          checkpoint name (default %s)\n"
			"  --poll-ms N          poll interval without notifications (default %d)\n"
			"  --batch N            events per batch and transaction (default %d)\n"
			"  --max-retries N      consecutive failures before giving up (default %d)\n"
			"  --max-batches N      stop after N batches\n"
			"  --exit-when-idle     exit once the feed has nothing more\n"
			"  --sharded            the source is a proxy (eventsourced_proxy):\n"
			"                       follow events_by_type_shards with its token\n"
			"  -v, --verbose        print one line per batch\n",
			DEFAULT_ENTITY_TYPE, DEFAULT_NAME, DEFAULT_POLL_MS, DEFAULT_BATCH,
			DEFAULT_MAX_RETRIES);
}

/* Parses a numeric option, refusing junk and out-of-range values. */
static bool
parse_number(const char *option, const char *text, long min, long max,
			 long *value)
{
	char	   *end;

	errno = 0;
	*value = strtol(text, &end, 10);
	if (errno == 0 && end != text && *end == '\0' &&
		*value >= min && *value <= max)
		return true;
	fprintf(stderr, "projector: --%s must be an integer from %ld to %ld, not \"%s\"\n",
			option, min, max, text);
	return false;
}

/* Applies one command-line option to the options; false if it is invalid. */
static bool
apply_option(Options *opt, int code, const char *arg)
{
	switch (code)
	{
		case 's':
			opt->source = arg;
			return true;
		case 't':
			opt->target = arg;
			return true;
		case 'T':
			opt->entity_type = arg;
			return true;
		case 'n':
			opt->name = arg;
			return true;
		case 'p':
			return parse_number("poll-ms", arg, 1, MAX_POLL_MS, &opt->poll_ms);
		case 'b':
			return parse_number("batch", arg, 1, MAX_BATCH, &opt->batch);
		case 'r':
			return parse_number("max-retries", arg, 0, MAX_RETRIES_LIMIT,
								&opt->max_retries);
		case 'm':
			return parse_number("max-batches", arg, 1, MAX_BATCHES_LIMIT,
								&opt->max_batches);
		case 'x':
			opt->exit_when_idle = true;
			return true;
		case 'v':
			opt->verbose = true;
			return true;
		case 'S':
			opt->sharded = true;
			return true;
		case 'h':
			usage(stdout);
			exit(EXIT_SUCCESS);
	}
	return false;
}

/* Reports a bad command line and exits; message may be NULL. */
static void
bad_usage(const char *message)
{
	if (message)
		fprintf(stderr, "projector: %s\n", message);
	usage(stderr);
	exit(EXIT_USAGE);
}

/* Fills the options from the command line; exits on a usage error. */
static void
parse_options(int argc, char **argv, Options *opt)
{
	static const struct option long_options[] = {
		{"source", required_argument, NULL, 's'},
		{"target", required_argument, NULL, 't'},
		{"type", required_argument, NULL, 'T'},
		{"name", required_argument, NULL, 'n'},
		{"poll-ms", required_argument, NULL, 'p'},
		{"batch", required_argument, NULL, 'b'},
		{"max-retries", required_argument, NULL, 'r'},
		{"max-batches", required_argument, NULL, 'm'},
		{"exit-when-idle", no_argument, NULL, 'x'},
		{"verbose", no_argument, NULL, 'v'},
		{"sharded", no_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			code;

	opt->entity_type = DEFAULT_ENTITY_TYPE;
	opt->name = DEFAULT_NAME;
	opt->poll_ms = DEFAULT_POLL_MS;
	opt->batch = DEFAULT_BATCH;
	opt->max_retries = DEFAULT_MAX_RETRIES;
	while ((code = getopt_long(argc, argv, "vh", long_options, NULL)) != -1)
	{
		if (!apply_option(opt, code, optarg))
			bad_usage(NULL);
	}
	if (optind < argc || opt->source == NULL || opt->target == NULL)
		bad_usage("--source and --target are required, and nothing else");
	if (opt->entity_type[0] == '\0' || opt->name[0] == '\0')
		bad_usage("--type and --name must not be empty");
}

/* Runs one statement with text parameters; reports and returns NULL on
 * failure, with the SQLSTATE in sqlstate (6 bytes, "" if none) when given. */
static PGresult *
run_query_state(PGconn *conn, const char *what, const char *sql,
				int nparams, const char *const *params, char *sqlstate)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType status = PQresultStatus(res);
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
		return res;
	fprintf(stderr, "projector: %s failed: %s", what,
			res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
	if (sqlstate != NULL)
		snprintf(sqlstate, 6, "%s", state != NULL ? state : "");
	PQclear(res);
	return NULL;
}

/* Runs one statement with text parameters; reports and returns NULL on failure. */
static PGresult *
run_query(PGconn *conn, const char *what, const char *sql,
		  int nparams, const char *const *params)
{
	return run_query_state(conn, what, sql, nparams, params, NULL);
}

/* Runs one statement whose result does not matter beyond success. */
static bool
run_command(PGconn *conn, const char *what, const char *sql,
			int nparams, const char *const *params)
{
	PGresult   *res = run_query(conn, what, sql, nparams, params);

	PQclear(res);
	return res != NULL;
}

/* Labels server notices and asynchronous errors with the side they came from. */
static void
print_notice(void *side, const char *message)
{
	fprintf(stderr, "projector: %s: %s", (const char *) side, message);
}

/* Opens one connection, named after the projection so operators can spot it. */
static PGconn *
open_connection(const char *conninfo, const char *name, const char *side)
{
	const char *const keywords[] = {"dbname", "fallback_application_name", NULL};
	const char *const values[] = {conninfo, name, NULL};
	PGconn	   *conn = PQconnectdbParams(keywords, values, 1);

	if (PQstatus(conn) == CONNECTION_OK)
	{
		PQsetNoticeProcessor(conn, print_notice, (void *) side);
		return conn;
	}
	fprintf(stderr, "projector: cannot connect to the %s database: %s",
			side, PQerrorMessage(conn));
	PQfinish(conn);
	return NULL;
}

/* Drops both connections; the server rolls back an unfinished batch. */
static void
close_connections(Projector *p)
{
	PQfinish(p->source);
	PQfinish(p->target);
	p->source = NULL;
	p->target = NULL;
}

/* Keeps a checkpoint read from the target or the feed; false if too long. */
static bool
keep_checkpoint(Projector *p, const char *value)
{
	if (strlen(value) >= sizeof(p->checkpoint))
	{
		fprintf(stderr, "projector: checkpoint of %zu bytes is longer than %d\n",
				strlen(value), MAX_CHECKPOINT_LEN - 1);
		return false;
	}
	strcpy(p->checkpoint, value);
	return true;
}

/* Reads the checkpoint back from the target: the only truth after a failure. */
static bool
load_checkpoint(Projector *p)
{
	const char *params[] = {p->opt.name};
	PGresult   *res = run_query(p->target, "loading the checkpoint",
								p->sql->load_checkpoint, 1, params);
	bool		found = res && PQntuples(res) == 1;

	if (found)
		found = keep_checkpoint(p, PQgetvalue(res, 0, 0));
	else if (res)
		fprintf(stderr, "projector: checkpoint \"%s\" vanished\n", p->opt.name);
	PQclear(res);
	return found;
}

/* Creates the read model and the checkpoint when missing, then loads it. */
static bool
prepare_target(Projector *p)
{
	const char *params[] = {p->opt.name};

	return run_command(p->target, "quieting notices", QUIET_SQL, 0, NULL) &&
		run_command(p->target, "creating projector_checkpoint",
					   p->sql->create_checkpoint, 0, NULL) &&
		run_command(p->target, "creating projector_totals",
					CREATE_TOTALS_SQL, 0, NULL) &&
		run_command(p->target, "creating the checkpoint",
					p->sql->insert_checkpoint, 1, params) &&
		load_checkpoint(p);
}

/* Connects both sides, listens for commits and reloads the checkpoint. */
static bool
connect_all(Projector *p)
{
	p->source = open_connection(p->opt.source, p->opt.name, "source");
	p->target = open_connection(p->opt.target, p->opt.name, "target");
	return p->source && p->target && prepare_target(p) &&
		run_command(p->source, "listening", LISTEN_SQL, 0, NULL);
}

/*
 * Consumes every notification received so far: each only means "read now",
 * so many coalesce into one read.  Returns how many, or -1 if the source
 * connection is broken.
 */
static int
drain_notifications(PGconn *conn)
{
	PGnotify   *notify;
	int			count = 0;

	if (!PQconsumeInput(conn))
	{
		fprintf(stderr, "projector: source connection lost: %s",
				PQerrorMessage(conn));
		return -1;
	}
	while ((notify = PQnotifies(conn)) != NULL)
	{
		PQfreemem(notify);
		count++;
	}
	return count;
}

/* Sleeps until the source sends something (a notification) or timeout_ms passes. */
static Outcome
wait_for_source(PGconn *conn, long timeout_ms)
{
	struct pollfd pfd;

	pfd.fd = PQsocket(conn);
	pfd.events = POLLIN;
	pfd.revents = 0;
	if (pfd.fd < 0)
	{
		fprintf(stderr, "projector: source connection has no socket\n");
		return OUTCOME_RETRY;
	}
	if (stop_requested)
		return OUTCOME_OK;
	if (poll(&pfd, 1, (int) timeout_ms) < 0 && errno != EINTR)
	{
		perror("projector: poll");
		return OUTCOME_RETRY;
	}
	return OUTCOME_OK;
}

/* Reads the next batch of the feed after the checkpoint. */
static PGresult *
read_batch(Projector *p, bool *refused)
{
	char		max_count[NUMBER_TEXT_LEN];
	const char *params[3];
	char		sqlstate[6] = "";
	PGresult   *res;

	snprintf(max_count, sizeof(max_count), "%ld", p->opt.batch);
	params[0] = p->opt.entity_type;
	params[1] = p->checkpoint;
	params[2] = max_count;
	res = run_query_state(p->source, "reading the feed", p->sql->read_batch, 3, params, sqlstate);
	/* a proxy refusing the stored token (one of eventsourced_proxy 0.1.0)
	 * refuses it again on every retry */
	*refused = res == NULL && p->opt.sharded && strcmp(sqlstate, "22023") == 0;
	if (*refused)
		fprintf(stderr, "projector: the proxy refuses the stored token; rebuild the read model"
				" (docs/scale-out.md, \"A projector outside the shards\")\n");
	return res;
}

/*
 * Moves the checkpoint from where this process left it.  The row lock it
 * takes, and the check of the old position, keep a second projector of the
 * same name from applying the same batch.
 */
static Outcome
claim_checkpoint(Projector *p, const char *last)
{
	const char *params[] = {p->opt.name, p->checkpoint, last};
	PGresult   *res = run_query(p->target, "moving the checkpoint",
								p->sql->claim_checkpoint, 3, params);
	bool		claimed;

	if (res == NULL)
		return OUTCOME_RETRY;
	claimed = strcmp(PQcmdTuples(res), "1") == 0;
	PQclear(res);
	if (claimed)
		return OUTCOME_OK;
	fprintf(stderr, "projector: checkpoint \"%s\" was moved by someone else; reloading it\n",
			p->opt.name);
	return OUTCOME_RETRY;
}

/* Adds one event to its counter's total and event count. */
static Outcome
apply_event(Projector *p, const PGresult *batch, int row)
{
	const char *params[2];

	if (PQgetisnull(batch, row, COL_DELTA))
	{
		fprintf(stderr, "projector: event at position %s of %s has no integer \"n\" in its payload\n",
				PQgetvalue(batch, row, COL_CHECKPOINT),
				PQgetvalue(batch, row, COL_ENTITY_ID));
		return OUTCOME_FATAL;
	}
	params[0] = PQgetvalue(batch, row, COL_ENTITY_ID);
	params[1] = PQgetvalue(batch, row, COL_DELTA);
	if (!run_command(p->target, "updating a total", UPSERT_TOTAL_SQL, 2, params))
		return OUTCOME_RETRY;
	return OUTCOME_OK;
}

/*
 * Applies a batch and moves the checkpoint in one target transaction, so
 * that each event counts exactly once.  On failure the transaction is left
 * open: the caller drops the connection, which rolls it back.
 */
static Outcome
apply_batch(Projector *p, const PGresult *batch)
{
	int			rows = PQntuples(batch);
	const char *last = PQgetvalue(batch, rows - 1, COL_CHECKPOINT);
	Outcome		outcome = OUTCOME_RETRY;

	if (run_command(p->target, "starting a transaction", "BEGIN", 0, NULL))
		outcome = claim_checkpoint(p, last);
	for (int row = 0; row < rows && outcome == OUTCOME_OK; row++)
		outcome = apply_event(p, batch, row);
	if (outcome == OUTCOME_OK &&
		!run_command(p->target, "committing", "COMMIT", 0, NULL))
		outcome = OUTCOME_RETRY;
	if (outcome != OUTCOME_OK)
		return outcome;

	p->batches++;
	if (p->opt.verbose)
	{
		printf("batch %ld: %d events, positions %s..%s\n", p->batches, rows,
			   PQgetvalue(batch, 0, COL_CHECKPOINT), last);
		fflush(stdout);
	}
	return keep_checkpoint(p, last) ? OUTCOME_OK : OUTCOME_FATAL;
}

/*
 * Caught up: read again at once if notified meanwhile; otherwise stop if
 * asked to exit when idle, or wait for a notification or the poll timeout.
 */
static Outcome
idle(Projector *p, bool empty_read)
{
	int			pending = drain_notifications(p->source);

	if (pending < 0)
		return OUTCOME_RETRY;
	if (pending > 0)
		return OUTCOME_OK;
	if (empty_read && p->opt.exit_when_idle)
		return OUTCOME_DONE;
	return wait_for_source(p->source, p->opt.poll_ms);
}

/* One turn of the loop: read a batch, apply it, and idle when caught up. */
static Outcome
project_step(Projector *p)
{
	PGresult   *batch;
	int			rows;
	Outcome		outcome = OUTCOME_OK;
	bool		refused;

	if (drain_notifications(p->source) < 0)
		return OUTCOME_RETRY;
	batch = read_batch(p, &refused);
	if (batch == NULL)
		return refused ? OUTCOME_FATAL : OUTCOME_RETRY;
	rows = PQntuples(batch);
	if (rows > 0)
		outcome = apply_batch(p, batch);
	PQclear(batch);
	if (outcome != OUTCOME_OK)
		return outcome;
	if (p->opt.max_batches > 0 && p->batches >= p->opt.max_batches)
		return OUTCOME_DONE;
	/* a proxy's page may be short while a server has more: only an empty
	 * one says the feed is caught up */
	if (rows == p->opt.batch || (p->opt.sharded && rows > 0))
		return OUTCOME_OK;
	return idle(p, rows == 0);
}

/* Waits before reconnecting, longer after each failure, so a down server is not hammered. */
static void
back_off(const Projector *p, int failures)
{
	long		delay_ms = BACKOFF_FIRST_MS;

	for (int i = 1; i < failures && delay_ms < BACKOFF_MAX_MS; i++)
		delay_ms *= 2;
	if (delay_ms > BACKOFF_MAX_MS)
		delay_ms = BACKOFF_MAX_MS;
	fprintf(stderr, "projector: reconnecting in %ld ms (retry %d of %ld)\n",
			delay_ms, failures, p->opt.max_retries);
	if (!stop_requested)
		poll(NULL, 0, (int) delay_ms);	/* a stop signal cuts it short */
}

/* Drives the projection until it is stopped, idles out or gives up. */
static int
run(Projector *p)
{
	int			failures = 0;

	while (!stop_requested)
	{
		Outcome		outcome = OUTCOME_RETRY;

		if (p->source != NULL || connect_all(p))
			outcome = project_step(p);
		switch (outcome)
		{
			case OUTCOME_OK:
				failures = 0;
				break;
			case OUTCOME_DONE:
				return EXIT_SUCCESS;
			case OUTCOME_FATAL:
				return EXIT_FAILURE;
			case OUTCOME_RETRY:
				close_connections(p);
				if (++failures > p->opt.max_retries)
				{
					fprintf(stderr, "projector: giving up after %d consecutive failures\n",
							failures);
					return EXIT_FAILURE;
				}
				back_off(p, failures);
				break;
		}
	}
	return EXIT_SUCCESS;
}

int
main(int argc, char **argv)
{
	Projector	p;
	int			status;

	memset(&p, 0, sizeof(p));
	parse_options(argc, argv, &p.opt);
	p.sql = p.opt.sharded ? &sharded_feed : &single_feed;
	install_signal_handlers();
	status = run(&p);
	close_connections(&p);
	return status;
}
