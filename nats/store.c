/*-------------------------------------------------------------------------
 *
 * store.c
 *		The PostgreSQL side of the relay: the connection, the lock that
 *		keeps one relay per name, the checkpoint and the feed's pages.
 *
 * The checkpoint is a row of eventsourced_nats.relays, a table the relay
 * creates in a schema of its own when missing.  Both must belong to the
 * role the relay connects as (another role's table could carry triggers
 * that would run as the relay).  One relay per name: a session-level
 * advisory lock on the name, taken after connecting and released by the
 * server when the session ends, however it ends.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

#define NOTIFY_CHANNEL		"eventsourced"

/* The statements; data always travels as parameters. */
#define SESSION_SQL \
	"SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)," \
	" pg_catalog.set_config('client_min_messages', 'warning', false)"
/* From the catalogs, which every role reads (to_regclass needs USAGE). */
#define SCHEMA_MISSING_SQL \
	"SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_namespace" \
	" WHERE nspname = 'eventsourced_nats')"
#define TABLE_MISSING_SQL \
	"SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_class c" \
	" JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace" \
	" WHERE n.nspname = 'eventsourced_nats' AND c.relname = 'relays')"
#define CREATE_SCHEMA_SQL "CREATE SCHEMA IF NOT EXISTS eventsourced_nats"
#define CREATE_SQL \
	"CREATE TABLE IF NOT EXISTS eventsourced_nats.relays (" \
	" name text COLLATE \"C\" PRIMARY KEY," \
	" stream text NOT NULL," \
	" types text[] COLLATE \"C\"," \
	" position bigint NOT NULL DEFAULT 0 CHECK (position >= 0)," \
	" updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()," \
	" snapshot_change bigint NOT NULL DEFAULT 0 CHECK (snapshot_change >= 0))"
/* The snapshot checkpoint came with --snapshots; older tables get it. */
#define COLUMN_MISSING_SQL \
	"SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_attribute" \
	" WHERE attrelid = 'eventsourced_nats.relays'::pg_catalog.regclass" \
	" AND attname = 'snapshot_change' AND NOT attisdropped)"
#define ADD_COLUMN_SQL \
	"ALTER TABLE eventsourced_nats.relays ADD COLUMN IF NOT EXISTS" \
	" snapshot_change bigint NOT NULL DEFAULT 0 CHECK (snapshot_change >= 0)"
#define OWNED_SQL \
	"SELECT n.nspowner = r.oid AND c.relowner = r.oid AND c.relkind = 'r'" \
	" FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid," \
	" pg_catalog.pg_roles r" \
	" WHERE n.nspname = 'eventsourced_nats' AND c.relname = 'relays'" \
	" AND r.rolname = CURRENT_USER"
#define LOCK_SQL \
	"SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('eventsourced_nats')," \
	" pg_catalog.hashtext($1))"
#define INSERT_SQL \
	"INSERT INTO eventsourced_nats.relays (name, stream, types) VALUES ($1, $2, $3)" \
	" ON CONFLICT (name) DO NOTHING"
#define LOAD_SQL \
	"SELECT position, stream = $2, types IS NOT DISTINCT FROM $3::text[], stream," \
	" coalesce(types::text, 'all types')" \
	" FROM eventsourced_nats.relays WHERE name = $1"
#define FEED_END_SQL \
	"SELECT coalesce(pg_catalog.max(position), 0) FROM eventsourced.events"
#define STORE_ID_SQL \
	"SELECT s.system_identifier::text || '-' || d.oid::text" \
	" FROM pg_catalog.pg_control_system() s, pg_catalog.pg_database d" \
	" WHERE d.datname = pg_catalog.current_database()"
#define SAVE_SQL \
	"UPDATE eventsourced_nats.relays SET position = $2, updated_at = pg_catalog.now()" \
	" WHERE name = $1"
#define PAGE_SQL \
	"SELECT position, entity_type, entity_id, seq_no, event_type, payload," \
	" metadata, event_id, payload_bytes FROM eventsourced.read_all($1, $2)"

/* Runs one statement with text parameters; reports and returns NULL on failure. */
PGresult *
store_query(PGconn *conn, const char *what, const char *sql,
			int nparams, const char *const *params, int format)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL,
								   format);
	ExecStatusType status = PQresultStatus(res);

	if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
		return res;
	fprintf(stderr, PROGRAM_NAME ": %s failed: %s", what,
			res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
	PQclear(res);
	return NULL;
}

/* Runs one statement and returns its one text value (malloc'ed), or NULL. */
char *
store_query_value(PGconn *conn, const char *what, const char *sql,
			int nparams, const char *const *params)
{
	PGresult   *res = store_query(conn, what, sql, nparams, params, 0);
	char	   *value = NULL;

	if (res && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
		value = strdup(PQgetvalue(res, 0, 0));
	else if (res)
		fprintf(stderr, PROGRAM_NAME ": %s returned no value\n", what);
	PQclear(res);
	return value;
}

/* Prints server notices with the program's name. */
static void
print_notice(void *arg, const char *message)
{
	(void) arg;
	fprintf(stderr, PROGRAM_NAME ": server: %s", message);
}

/* Opens a connection named after the relay, with a search_path no one can trap. */
PGconn *
store_open(const char *conninfo, const char *name)
{
	const char *const keywords[] = {"dbname", "fallback_application_name", NULL};
	const char *const values[] = {conninfo, name, NULL};
	PGconn	   *conn = PQconnectdbParams(keywords, values, 1);
	PGresult   *res;

	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, PROGRAM_NAME ": cannot connect to the event store: %s",
				PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeProcessor(conn, print_notice, NULL);
	res = store_query(conn, "setting up the session", SESSION_SQL, 0, NULL, 0);
	if (res == NULL)
	{
		PQfinish(conn);
		return NULL;
	}
	PQclear(res);
	return conn;
}

/* Runs a statement whose result does not matter beyond success. */
bool
store_run(PGconn *conn, const char *what, const char *sql,
			int nparams, const char *const *params)
{
	PGresult   *res = store_query(conn, what, sql, nparams, params, 0);

	PQclear(res);
	return res != NULL;
}

/* Runs a statement when a query says true: creates what is missing. */
static bool
create_if(PGconn *conn, const char *what, const char *missing_sql, const char *create_sql)
{
	char	   *missing = store_query_value(conn, what, missing_sql, 0, NULL);
	bool		ok = missing != NULL;

	if (ok && strcmp(missing, "t") == 0)
		ok = store_run(conn, what, create_sql, 0, NULL);
	free(missing);
	return ok;
}

/*
 * Creates the checkpoint table (and its schema) when missing, and refuses
 * (exits) when they belong to another role.  Each is only created when
 * missing, so that a role without CREATE on the database can run the
 * relay in a schema an administrator made for it, and another role's
 * schema is refused with a clear message rather than a privilege error.
 */
static bool
prepare_table(PGconn *conn)
{
	char	   *owned;

	if (!create_if(conn, "creating schema eventsourced_nats", SCHEMA_MISSING_SQL,
				   CREATE_SCHEMA_SQL) ||
		!create_if(conn, "creating eventsourced_nats.relays", TABLE_MISSING_SQL, CREATE_SQL))
		return false;
	owned = store_query_value(conn, "checking eventsourced_nats.relays", OWNED_SQL, 0, NULL);
	if (owned && strcmp(owned, "t") != 0)
	{
		fprintf(stderr, PROGRAM_NAME ": schema eventsourced_nats and its table relays must"
				" belong to the role the relay connects as\n");
		exit(EXIT_FAILURE);
	}
	free(owned);
	return owned != NULL &&
		create_if(conn, "adding the snapshot checkpoint", COLUMN_MISSING_SQL, ADD_COLUMN_SQL);
}

/* Takes the name's lock: a second relay of the same name waits and retries. */
static bool
lock_name(Relay *r)
{
	const char *params[] = {r->opt.name};
	char	   *locked = store_query_value(r->store.conn, "locking the relay's name",
									 LOCK_SQL, 1, params);
	bool		ok = locked && strcmp(locked, "t") == 0;

	if (locked && !ok)
		fprintf(stderr, PROGRAM_NAME ": another relay named \"%s\" is running on this"
				" database\n", r->opt.name);
	free(locked);
	return ok;
}

/*
 * Loads the name's checkpoint, creating it at 0, and refuses a stream or a
 * --types filter other than the one the checkpoint was made with: the
 * checkpoint only means something for that stream and that filter.
 */
static Outcome
load_checkpoint(Relay *r)
{
	const char *params[] = {r->opt.name, r->opt.stream, r->opt.types_array};
	PGresult   *res;
	Outcome		outcome = OUTCOME_RETRY;

	if (!store_run(r->store.conn, "creating the checkpoint", INSERT_SQL, 3, params))
		return OUTCOME_RETRY;
	res = store_query(r->store.conn, "loading the checkpoint", LOAD_SQL, 3, params, 0);
	if (res == NULL || PQntuples(res) != 1)
		fprintf(stderr, PROGRAM_NAME ": checkpoint \"%s\" vanished\n", r->opt.name);
	else if (strcmp(PQgetvalue(res, 0, 1), "t") != 0 || strcmp(PQgetvalue(res, 0, 2), "t") != 0)
	{
		fprintf(stderr, PROGRAM_NAME ": relay \"%s\" publishes %s to stream \"%s\";"
				" use another --name for another stream or --types\n",
				r->opt.name, PQgetvalue(res, 0, 4), PQgetvalue(res, 0, 3));
		outcome = OUTCOME_FATAL;
	}
	else
	{
		r->store.checkpoint = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		outcome = OUTCOME_OK;
	}
	PQclear(res);
	return outcome;
}

/*
 * Connects to the store, takes the name's lock, loads the checkpoint and
 * listens for commits.  Returns false on any failure (the caller retries);
 * exits on a refusal that retrying cannot cure.
 */
bool
store_connect(Relay *r)
{
	char	   *id;
	Outcome		loaded;

	r->store.conn = store_open(r->opt.source, r->opt.name);
	if (r->store.conn == NULL || !prepare_table(r->store.conn) || !lock_name(r))
		return false;
	id = store_query_value(r->store.conn, "reading the system identifier", STORE_ID_SQL, 0, NULL);
	if (id == NULL)
		return false;
	snprintf(r->store.store_id, sizeof(r->store.store_id), "%s", id);
	free(id);
	loaded = load_checkpoint(r);
	if (loaded == OUTCOME_FATAL)
		exit(EXIT_FAILURE);
	return loaded == OUTCOME_OK &&
		store_run(r->store.conn, "listening", "LISTEN " NOTIFY_CHANNEL, 0, NULL);
}

/* Drops the connection, and with it the name's lock. */
void
store_close(Store *s)
{
	PQfinish(s->conn);
	s->conn = NULL;
}

/* Reads the next page of the feed after what was published (binary results). */
PGresult *
store_read_page(Relay *r)
{
	char		after[NUMBER_TEXT_LEN];
	char		count[NUMBER_TEXT_LEN];
	const char *params[] = {after, count};
	PGresult   *res;

	snprintf(after, sizeof(after), "%lld", (long long) r->read_after);
	snprintf(count, sizeof(count), "%ld", r->opt.batch);
	res = store_query(r->store.conn, "reading the feed", PAGE_SQL, 2, params, 1);
	if (res && PQnfields(res) != PAGE_COLUMNS)
	{
		fprintf(stderr, PROGRAM_NAME ": eventsourced.read_all returned %d columns, not %d\n",
				PQnfields(res), PAGE_COLUMNS);
		PQclear(res);
		exit(EXIT_FAILURE);
	}
	return res;
}

/* Moves the checkpoint; only ever called once JetStream acknowledged up to it. */
bool
store_save_checkpoint(Relay *r, int64_t position)
{
	char		text[NUMBER_TEXT_LEN];
	const char *params[] = {r->opt.name, text};

	snprintf(text, sizeof(text), "%lld", (long long) position);
	if (!store_run(r->store.conn, "saving the checkpoint", SAVE_SQL, 2, params))
		return false;
	r->store.checkpoint = position;
	return true;
}

/* Consumes the notifications received so far; -1 if the connection is broken. */
static int
drain_notifications(PGconn *conn)
{
	PGnotify   *notify;
	int			count = 0;

	if (!PQconsumeInput(conn))
	{
		fprintf(stderr, PROGRAM_NAME ": connection to the event store lost: %s",
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

/*
 * Caught up: read again at once if notified meanwhile; otherwise stop if
 * asked to exit when idle, or wait for a notification or the poll timeout.
 */
Outcome
store_idle(Relay *r, bool empty_page)
{
	struct pollfd pfd;
	int			pending = drain_notifications(r->store.conn);

	if (pending < 0)
		return OUTCOME_RETRY;
	if (pending > 0 || stop_requested)
		return OUTCOME_OK;
	if (empty_page && r->opt.exit_when_idle)
		return OUTCOME_DONE;
	pfd.fd = PQsocket(r->store.conn);
	pfd.events = POLLIN;
	pfd.revents = 0;
	if (pfd.fd < 0 || (poll(&pfd, 1, (int) r->opt.poll_ms) < 0 && errno != EINTR))
		return OUTCOME_RETRY;
	return OUTCOME_OK;
}

/* The last position of the feed (0: empty), or -1 on failure. */
int64_t
store_feed_end(Relay *r)
{
	char	   *end = store_query_value(r->store.conn, "reading the feed's end", FEED_END_SQL, 0, NULL);
	int64_t		value = end ? strtoll(end, NULL, 10) : -1;

	free(end);
	return value;
}
