/*-------------------------------------------------------------------------
 *
 * commands.c
 *		Commands over NATS request/reply: --commands.
 *
 * Each of --command-workers workers holds its own PostgreSQL connection
 * and a queue subscription to <prefix>.> (queue group
 * "eventsourced-commands", so that several relays share the requests);
 * libnats delivers each subscription's messages on a thread of its own,
 * so a worker's connection is only ever used by that thread.  A request on
 * <prefix>.<entity_type>.<entity_id>.<command> (tokens escaped as the
 * stream's subjects are) with a JSON body of arguments becomes one call of
 * eventsourced.handle_command; the reply is its result as JSON, or
 * {"error": {"sqlstate": ..., "message": ...}}.  A request with the header
 * Eventsourced-Command-Id passes it as the command id: a retry with that
 * id gets the first attempt's result (extension 0.4.0).
 *
 *-------------------------------------------------------------------------
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

#define COMMANDS_QUEUE_GROUP	"eventsourced-commands"
/* How long a stop waits for the commands in progress. */
#define COMMANDS_DRAIN_MS		10000
#define COMMAND_SQL \
	"SELECT pg_catalog.row_to_json(r)::text" \
	" FROM eventsourced.handle_command($1, $2, $3, $4::jsonb) r"
#define COMMAND_ID_SQL \
	"SELECT pg_catalog.row_to_json(r)::text" \
	" FROM eventsourced.handle_command($1, $2, $3, $4::jsonb, $5) r"
#define COMMAND_ID_HEADER		"Eventsourced-Command-Id"
/* SQLSTATEs of the requests the relay refuses itself. */
#define SQLSTATE_BAD_SUBJECT	"22023"
#define SQLSTATE_NO_CONNECTION	"08006"
#define SQLSTATE_BAD_BODY		"22P02"
#define SQLSTATE_TOO_BIG		"54000"

typedef struct Worker
{
	const Relay *relay;
	PGconn	   *conn;
	natsSubscription *sub;
} Worker;

static Worker *workers;
static int	nworkers;
static natsConnection *commands_conn;	/* sends replies at once */

/* Appends a JSON string literal of text to buf (malloc'ed, grown as needed). */
static void
append_json_string(char **buf, size_t *len, const char *text)
{
	size_t		need = *len + 6 * strlen(text) + 3;
	char	   *out;

	*buf = realloc(*buf, need + 1);
	out = *buf + *len;
	*out++ = '"';
	for (const unsigned char *c = (const unsigned char *) text; *c; c++)
	{
		if (*c == '"' || *c == '\\')
		{
			*out++ = '\\';
			*out++ = (char) *c;
		}
		else if (*c < 0x20)
			out += sprintf(out, "\\u%04x", *c);
		else
			*out++ = (char) *c;
	}
	*out++ = '"';
	*out = '\0';
	*len = out - *buf;
}

/* Builds the error reply {"error": {"sqlstate": ..., "message": ...}}. */
static char *
error_reply(const char *sqlstate, const char *message)
{
	char	   *buf = strdup("{\"error\": {\"sqlstate\": ");
	size_t		len = strlen(buf);
	size_t		mlen = strlen(message);
	char	   *trimmed = strndup(message, mlen);

	while (mlen > 0 && (trimmed[mlen - 1] == '\n' || trimmed[mlen - 1] == ' '))
		trimmed[--mlen] = '\0';
	append_json_string(&buf, &len, sqlstate);
	buf = realloc(buf, len + 16);
	len += sprintf(buf + len, ", \"message\": ");
	append_json_string(&buf, &len, trimmed);
	buf = realloc(buf, len + 4);
	strcpy(buf + len, "}}");
	free(trimmed);
	return buf;
}

/* The value of an upper-case hex digit (as escape_token writes them), or -1 */
static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Undoes escape_token in place for len bytes; false on a malformed %XX, a
 * NUL, or any other spelling than escape_token's (a byte that may stand
 * for itself escaped, lower-case hex, a byte that must be escaped left
 * plain): one spelling per name, so NATS permissions on subjects hold.
 */
static bool
unescape_token(char *token, size_t len)
{
	char	   *out = token;

	for (size_t i = 0; i < len; i++)
	{
		int			hi, lo;

		if (token[i] != '%')
		{
			if (!plain_byte((unsigned char) token[i]))
				return false;
			*out++ = token[i];
			continue;
		}
		if (i + 2 >= len)
			return false;
		hi = hex_value(token[i + 1]);
		lo = hex_value(token[i + 2]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0) || plain_byte((unsigned char) (hi * 16 + lo)))
			return false;
		*out++ = (char) (hi * 16 + lo);
		i += 2;
	}
	*out = '\0';
	return out > token;
}

/*
 * Whether the relay answers on a request's reply subject: only inboxes
 * (_INBOX..., also a custom inbox prefix such as _INBOX_cart.), never its
 * stream's subjects or the system's, which a requester could otherwise
 * make it publish to with the relay's own permissions.
 */
static bool
reply_allowed(const Relay *r, const char *reply_to)
{
	size_t		n = strlen(r->opt.stream);

	return strncmp(reply_to, "_INBOX", 6) == 0 &&
		!(strncmp(reply_to, r->opt.stream, n) == 0 && reply_to[n] == '.');
}

/*
 * Splits a request subject into entity type, entity id and command
 * (unescaped, in the copy *parts); false if it does not have that form.
 */
static bool
split_subject(const char *subject, const char *prefix, char **copy, char *parts[3])
{
	size_t		plen = strlen(prefix);
	char	   *p;

	*copy = NULL;
	if (strncmp(subject, prefix, plen) != 0 || subject[plen] != '.')
		return false;
	*copy = strdup(subject + plen + 1);
	p = *copy;
	for (int i = 0; i < 3; i++)
	{
		char	   *dot = strchr(p, '.');

		if ((dot == NULL) != (i == 2))
			return false;
		if (dot)
			*dot = '\0';
		parts[i] = p;
		if (!unescape_token(p, strlen(p)))
			return false;
		p = dot ? dot + 1 : NULL;
	}
	return true;
}

/*
 * Prepares the two command statements on a new connection: each command
 * is then bound and run without being parsed and planned again.
 */
static bool
prepare_statements(PGconn *conn)
{
	PGresult   *a = PQprepare(conn, "es_command", COMMAND_SQL, 4, NULL);
	PGresult   *b = PQprepare(conn, "es_command_id", COMMAND_ID_SQL, 5, NULL);
	bool		ok = PQresultStatus(a) == PGRES_COMMAND_OK && PQresultStatus(b) == PGRES_COMMAND_OK;

	if (!ok)
		fprintf(stderr, PROGRAM_NAME ": cannot prepare the command statements: %s",
				PQresultErrorMessage(PQresultStatus(a) != PGRES_COMMAND_OK ? a : b));
	PQclear(a);
	PQclear(b);
	return ok;
}

/* How many reads an idle connection's pending input may take (a FATAL, then end of file). */
#define MAX_IDLE_READS			8

/*
 * Whether an idle connection is still open: reads whatever the server
 * sent meanwhile (libpq sees the end of the connection only on a read
 * after the server's FATAL message).
 */
static bool
connection_alive(PGconn *conn)
{
	struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};

	for (int i = 0; i < MAX_IDLE_READS && pfd.fd >= 0 && poll(&pfd, 1, 0) > 0; i++)
		if (!PQconsumeInput(conn))
			return false;
	return PQstatus(conn) == CONNECTION_OK;
}

/*
 * Makes sure the worker's connection is usable, reconnecting once if not.
 * Reading what the server sent first notices a connection it closed (a
 * restart: its FATAL message and end of file) before a command is sent on
 * it, so the first command after a restart runs instead of failing.
 */
static bool
worker_connected(Worker *w)
{
	if (w->conn && connection_alive(w->conn))
		return true;
	PQfinish(w->conn);
	w->conn = store_open(w->relay->opt.commands_source, w->relay->opt.name);
	if (w->conn && !prepare_statements(w->conn))
	{
		PQfinish(w->conn);
		w->conn = NULL;
	}
	return w->conn != NULL;
}

/* Runs one command (with its command id, if not NULL); returns the reply (malloc'ed). */
static char *
run_command_request(Worker *w, char *parts[3], const char *args, const char *command_id)
{
	const char *params[] = {parts[0], parts[1], parts[2], args, command_id};
	PGresult   *res;
	char	   *reply;

	if (!worker_connected(w))
		return error_reply(SQLSTATE_NO_CONNECTION, "the relay has no connection to the event store");
	res = command_id ? PQexecPrepared(w->conn, "es_command_id", 5, params, NULL, NULL, 0)
		: PQexecPrepared(w->conn, "es_command", 4, params, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		reply = strdup(PQgetvalue(res, 0, 0));
	else
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

		reply = error_reply(state ? state : SQLSTATE_NO_CONNECTION,
							message ? message : PQerrorMessage(w->conn));
	}
	PQclear(res);
	return reply;
}

/* Serves one request (on the subscription's libnats thread). */
static void
on_command(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	Worker	   *w = closure;
	const char *reply_to = natsMsg_GetReply(msg);
	int			len = natsMsg_GetDataLength(msg);
	char	   *copy;
	char	   *parts[3];
	char	   *args = NULL;
	char	   *reply;
	const char *command_id = NULL;

	(void) sub;
	if (natsMsgHeader_Get(msg, COMMAND_ID_HEADER, &command_id) != NATS_OK)
		command_id = NULL;
	if (!split_subject(natsMsg_GetSubject(msg), w->relay->opt.commands_prefix, &copy, parts))
		reply = error_reply(SQLSTATE_BAD_SUBJECT, "a command's subject is"
							" <prefix>.<entity_type>.<entity_id>.<command>, each escaped");
	else if (memchr(natsMsg_GetData(msg), '\0', len) != NULL)
		reply = error_reply(SQLSTATE_BAD_BODY, "a command's body is JSON text, without NUL bytes");
	else
	{
		args = len > 0 ? strndup(natsMsg_GetData(msg), len) : strdup("{}");
		reply = run_command_request(w, parts, args, command_id);
	}
	if ((int64_t) strlen(reply) > w->relay->stream.max_payload)
	{
		free(reply);
		reply = error_reply(SQLSTATE_TOO_BIG, "the command's result is larger than nats-server's max_payload");
	}
	if (reply_to && reply_allowed(w->relay, reply_to))
		natsConnection_PublishString(nc, reply_to, reply);
	else if (reply_to)
		verbose(w->relay, "command %s: no reply to %.200s (not an inbox)", natsMsg_GetSubject(msg), reply_to);
	verbose(w->relay, "command %s: %.200s", natsMsg_GetSubject(msg), reply);
	free(reply);
	free(args);
	free(copy);
	natsMsg_Destroy(msg);
}

/* Opens the workers' connections and subscriptions. */
bool
commands_start(Relay *r)
{
	char		subject[MAX_STREAM_NAME + 3];

	snprintf(subject, sizeof(subject), "%s.>", r->opt.commands_prefix);
	commands_conn = stream_open_connection(r, true);
	if (commands_conn == NULL)
		return false;
	nworkers = (int) r->opt.command_workers;
	workers = calloc(nworkers, sizeof(Worker));
	for (int i = 0; i < nworkers; i++)
	{
		natsStatus	s;

		workers[i].relay = r;
		worker_connected(&workers[i]);	/* a failure is retried per request */
		s = natsConnection_QueueSubscribe(&workers[i].sub, commands_conn, subject,
										  COMMANDS_QUEUE_GROUP, on_command, &workers[i]);
		if (s != NATS_OK)
		{
			fprintf(stderr, PROGRAM_NAME ": cannot subscribe to %s: %s\n", subject,
					natsStatus_GetText(s));
			return false;
		}
	}
	fprintf(stderr, PROGRAM_NAME ": serving commands on %s (%d workers)\n", subject, nworkers);
	return true;
}

/* Ends the subscriptions (letting requests in progress finish), then the connections. */
void
commands_stop(void)
{
	for (int i = 0; i < nworkers; i++)
		natsSubscription_Drain(workers[i].sub);
	/* the callbacks in progress finish before their connections close */
	for (int i = 0; i < nworkers; i++)
	{
		natsSubscription_WaitForDrainCompletion(workers[i].sub, COMMANDS_DRAIN_MS);
		natsSubscription_Destroy(workers[i].sub);
	}
	for (int i = 0; i < nworkers; i++)
		PQfinish(workers[i].conn);
	free(workers);
	workers = NULL;
	nworkers = 0;
	natsConnection_Destroy(commands_conn);
	commands_conn = NULL;
}
