/*-------------------------------------------------------------------------
 *
 * relay.h
 *		eventsourced-nats: the relay from the eventsourced feed of one
 *		PostgreSQL database to a NATS JetStream stream.
 *
 * The relay pages through eventsourced.read_all() from its checkpoint,
 * publishes every event to <stream>.<entity_type>.<entity_id> and moves
 * the checkpoint (a row in eventsourced_nats.relays) only once JetStream
 * acknowledged the page.  Every publish carries the stream sequence it
 * expects to follow (Nats-Expected-Last-Sequence), so a message that failed
 * makes every later one fail too: the stream only ever holds a prefix of
 * the feed, and after any failure the relay reconciles with the stream's
 * last message (its Eventsourced-Position) and goes on from there.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ES_NATS_RELAY_H
#define ES_NATS_RELAY_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>
#include "libpq-fe.h"

#define PROGRAM_NAME			"eventsourced-nats"

/* Defaults and limits of the options. */
#define DEFAULT_NATS_URL		"nats://127.0.0.1:4222"
#define DEFAULT_STREAM			"events"
#define DEFAULT_NAME			"nats"
#define DEFAULT_COMMANDS_PREFIX "commands"
#define DEFAULT_BATCH			5000
#define MAX_BATCH				100000
/* Snapshot buckets (streams) --snapshots creates at most, by default. */
#define DEFAULT_MAX_BUCKETS		100
#define MAX_MAX_BUCKETS			100000
#define DEFAULT_POLL_MS			1000
#define MAX_POLL_MS				3600000
#define DEFAULT_ACK_WAIT_MS		5000
#define MAX_ACK_WAIT_MS			600000
#define DEFAULT_COMMAND_WORKERS 4
#define MAX_COMMAND_WORKERS		64
#define MAX_TYPES				1024
/* Longest stream name and commands prefix accepted (JetStream: 255). */
#define MAX_STREAM_NAME			255
/*
 * Longest subject published: nats-server closes a connection whose control
 * line (HPUB subject, reply inbox, sizes) exceeds max_control_line, 4,096
 * bytes by default.
 */
#define MAX_SUBJECT_BYTES		3800

/* Reconnect backoff: doubles after each failure, up to a ceiling. */
#define BACKOFF_FIRST_MS		100
#define BACKOFF_MAX_MS			5000

/* Room for a bigint or an unsigned 64-bit number as decimal text. */
#define NUMBER_TEXT_LEN			32

/* Exit statuses. */
#define EXIT_USAGE				2

/* What one step of the relay leads to. */
typedef enum Outcome
{
	OUTCOME_OK,					/* progress, or a wait that ended: go on */
	OUTCOME_RETRY,				/* a connection or a publish failed: reconnect, reconcile */
	OUTCOME_DONE,				/* finished as asked (idle) */
	OUTCOME_FATAL				/* cannot go on: exit non-zero */
} Outcome;

typedef struct Options
{
	const char *source;			/* conninfo of the event store */
	const char *nats_url;
	const char *stream;
	const char *name;			/* checkpoint name, also application_name */
	const char *types_text;		/* --types as given, NULL: all */
	char	  **types;			/* --types split, sorted, unique */
	int			ntypes;
	const char *types_array;	/* the same as a text[] literal, NULL: all */
	const char *creds;
	const char *nkey;			/* user NKey public key, with nkey_seed */
	const char *nkey_seed;
	const char *tls_ca;
	const char *tls_cert;
	const char *tls_key;
	bool		tls;
	bool		commands;
	const char *commands_prefix;
	const char *commands_source;	/* conninfo for commands, default source */
	long		command_workers;
	bool		snapshots;
	long		max_buckets;	/* snapshot buckets it creates at most */
	long		batch;
	long		poll_ms;
	long		ack_wait_ms;
	bool		exit_when_idle;
	bool		verbose;
} Options;

/* The PostgreSQL side: the feed's connection and what it told us. */
typedef struct Store
{
	PGconn	   *conn;
	char		store_id[2 * NUMBER_TEXT_LEN + 2];	/* <system id>-<db oid> */
	int64_t		checkpoint;		/* last position acknowledged */
} Store;

/* How many published pages may wait for their acks (see publish.c). */
#define MAX_PAGE_MARKS			64

/* A published page: once sent messages are acked, the feed is done up to end. */
typedef struct PageMark
{
	uint64_t	sent;
	int64_t		end;
} PageMark;

/* The NATS side: the connection, the JetStream context, the publish chain. */
typedef struct Stream
{
	natsConnection *conn;
	jsCtx	   *js;
	int64_t		max_payload;
	uint64_t	last_seq;		/* stream sequence the next publish follows */
	int64_t		resume_after;	/* position the stream's last message holds, -1: none */
	char	   *relay_token;	/* --name, escaped: the Eventsourced-Relay header */
	/* Pages published and not yet known to be acknowledged (a ring). */
	PageMark	marks[MAX_PAGE_MARKS];
	int			first_mark;
	int			nmarks;
	uint64_t	sent;			/* messages published since the reconciliation */
	/* Written by libnats' ack thread. */
	_Atomic uint64_t acked;		/* positive acks since the reconciliation */
	_Atomic int failed;
	char		failure[256];	/* read once failed is seen set */
} Stream;

/* A KV bucket the relay has bound to, per entity type (see snapshots.c). */
typedef struct Bucket
{
	char	   *name;			/* snapshots_<escaped entity type> */
	kvStore    *kv;
	struct Bucket *next;
} Bucket;

typedef struct Relay
{
	Options		opt;
	Store		store;
	Stream		stream;
	int64_t		read_after;		/* position published up to (acked or not) */
	long		pages;
	/* --snapshots */
	int64_t		snapshot_checkpoint;	/* last snapshot change mirrored */
	Bucket	   *buckets;
} Relay;

extern volatile sig_atomic_t stop_requested;

/* options.c */
extern void parse_options(int argc, char **argv, Options *opt);
extern bool follows_type(const Options *opt, const char *type);

/* store.c */
extern bool store_connect(Relay *r);
extern void store_close(Store *s);
extern PGresult *store_read_page(Relay *r);
extern bool store_save_checkpoint(Relay *r, int64_t position);
extern char *store_query_value(PGconn *conn, const char *what, const char *sql,
							   int nparams, const char *const *params);
extern bool store_run(PGconn *conn, const char *what, const char *sql,
					  int nparams, const char *const *params);
extern int64_t store_feed_end(Relay *r);
extern Outcome store_idle(Relay *r, bool empty_page);
extern PGconn *store_open(const char *conninfo, const char *name);
extern PGresult *store_query(PGconn *conn, const char *what, const char *sql,
							 int nparams, const char *const *params, int format);

/* Columns of a feed page (store_read_page). */
enum
{
	COL_POSITION,
	COL_ENTITY_TYPE,
	COL_ENTITY_ID,
	COL_SEQ_NO,
	COL_EVENT_TYPE,
	COL_PAYLOAD,
	COL_METADATA,
	COL_EVENT_ID,
	COL_PAYLOAD_BYTES,
	PAGE_COLUMNS
};

/* stream.c */
extern bool stream_connect(Relay *r);
extern natsConnection *stream_open_connection(const Relay *r, bool send_asap);
extern void stream_close(Stream *s);
extern void stream_closing(void);
extern Outcome stream_reconcile(Relay *r);

/* publish.c */
extern Outcome publish_page(Relay *r, const PGresult *page);
extern Outcome publish_flush(Relay *r);
extern void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae,
				   void *closure);

/* subject.c */
extern bool plain_byte(unsigned char c);
extern char *escape_with(const char *value, int len, bool (*plain) (unsigned char),
						 char escape);
extern char *escape_token(const char *value, int len);
extern char *escape_bucket(const char *value, int len);
extern char *entity_subject(const char *stream, const char *type, int type_len,
							const char *id, int id_len);
extern char *escape_key(const char *value, int len);
extern bool valid_name_token(const char *name);
extern int64_t read_int64(const char *bytes);

/* snapshots.c */
extern Outcome snapshots_connect(Relay *r);
extern Outcome snapshots_step(Relay *r, bool *more);

/* kv.c */
extern Outcome kv_put_snapshot(Relay *r, const char *type, int type_len, const char *id,
							   int id_len, uint64_t stream_seq, const char *state,
							   size_t state_len, int64_t change);
extern void kv_close(Relay *r);

/* locate.c */
extern Outcome locate_event(Relay *r, const char *subject, int64_t position,
							uint64_t *stream_seq);

/* commands.c */
extern bool commands_start(Relay *r);
extern void commands_stop(void);

/* main.c */
extern void back_off(const char *what, int failures);
extern void verbose(const Relay *r, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

#endif							/* ES_NATS_RELAY_H */
