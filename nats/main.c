/*-------------------------------------------------------------------------
 *
 * main.c
 *		eventsourced-nats: the main loop.
 *
 * A separate process, not a background worker: libnats runs threads of
 * its own (reading, flushing, timers, callbacks), which do not belong
 * inside a PostgreSQL backend, and NATS being down must never concern the
 * database server.
 *
 *-------------------------------------------------------------------------
 */
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

volatile sig_atomic_t stop_requested = 0;

/* Lets SIGINT/SIGTERM end the loop after the current page. */
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
	signal(SIGPIPE, SIG_IGN);
}

/* Prints a line on stdout with --verbose. */
void
verbose(const Relay *r, const char *fmt,...)
{
	va_list		args;

	if (!r->opt.verbose)
		return;
	va_start(args, fmt);
	vprintf(fmt, args);
	va_end(args);
	putchar('\n');
	fflush(stdout);
}

/* Waits before retrying, longer after each failure, and says so. */
void
back_off(const char *what, int failures)
{
	long		delay_ms = BACKOFF_FIRST_MS;

	for (int i = 1; i < failures && delay_ms < BACKOFF_MAX_MS; i++)
		delay_ms *= 2;
	if (delay_ms > BACKOFF_MAX_MS)
		delay_ms = BACKOFF_MAX_MS;
	fprintf(stderr, PROGRAM_NAME ": %s; retrying in %ld ms (attempt %d)\n",
			what, delay_ms, failures);
	if (!stop_requested)
		poll(NULL, 0, (int) delay_ms);	/* a stop signal cuts it short */
}

/*
 * Makes checkpoint and stream agree: the stream's last message, when it is
 * this relay's, is the truth (the checkpoint may lag behind an ack that
 * came just before a crash, or lead a stream that lost acknowledged
 * messages in a host crash).
 */
static Outcome
reconcile(Relay *r)
{
	Outcome		outcome = stream_reconcile(r);
	int64_t		held = r->stream.resume_after;
	int64_t		feed_end;

	r->read_after = r->store.checkpoint;
	if (outcome != OUTCOME_OK || held < 0 || held == r->store.checkpoint)
		return outcome;
	feed_end = store_feed_end(r);
	if (feed_end < 0)
		return OUTCOME_RETRY;
	if (held > feed_end)
	{
		fprintf(stderr, PROGRAM_NAME ": stream \"%s\" holds events up to position %lld, but"
				" the store's feed ends at %lld (was the database restored from a backup?);"
				" refusing to go on\n", r->opt.stream, (long long) held, (long long) feed_end);
		return OUTCOME_FATAL;
	}
	fprintf(stderr, PROGRAM_NAME ": stream \"%s\" holds events up to position %lld,"
			" checkpoint \"%s\" was %lld: going on from %lld\n", r->opt.stream,
			(long long) held, r->opt.name, (long long) r->store.checkpoint,
			(long long) held);
	if (!store_save_checkpoint(r, held))
		return OUTCOME_RETRY;
	r->read_after = held;
	return OUTCOME_OK;
}

/*
 * Connects what is not connected (NATS first, so that commands are served
 * even by a relay that waits for its name's lock) and reconciles.
 */
static Outcome
prepare(Relay *r)
{
	static bool serving = false;

	if (r->stream.conn == NULL && !stream_connect(r))
		return OUTCOME_RETRY;
	if (r->opt.commands && !serving)
	{
		if (!commands_start(r))
			return OUTCOME_FATAL;
		serving = true;
	}
	if (r->store.conn == NULL && !store_connect(r))
	{
		store_close(&r->store);
		return OUTCOME_RETRY;
	}
	if (r->opt.snapshots)
	{
		Outcome		loaded = snapshots_connect(r);

		if (loaded != OUTCOME_OK)
			return loaded;
	}
	return reconcile(r);
}

/*
 * One turn: read a page, publish it, mirror a page of snapshot changes
 * (--snapshots), and idle when caught up.
 */
static Outcome
step(Relay *r)
{
	PGresult   *page = store_read_page(r);
	int			rows;
	Outcome		outcome = OUTCOME_OK;
	bool		more = false;

	if (page == NULL)
		return OUTCOME_RETRY;
	rows = PQntuples(page);
	if (rows > 0)
		outcome = publish_page(r, page);
	else if (r->stream.nmarks > 0)
		outcome = publish_flush(r);
	PQclear(page);
	if (outcome != OUTCOME_OK)
		return outcome;
	if (rows > 0)
		verbose(r, "page %ld: %d events, checkpoint %lld", ++r->pages, rows,
				(long long) r->store.checkpoint);
	if (r->opt.snapshots && (outcome = snapshots_step(r, &more)) != OUTCOME_OK)
		return outcome;
	if (rows == r->opt.batch || more)
		return OUTCOME_OK;
	return store_idle(r, rows == 0);
}

/* Drives the relay until it is stopped, idles out or meets a fatal error. */
static int
run(Relay *r)
{
	int			failures = 0;
	bool		ready = false;

	while (!stop_requested)
	{
		Outcome		outcome = ready ? step(r) : prepare(r);

		switch (outcome)
		{
			case OUTCOME_OK:
				/* the backoff grows until a step (not a reconnection) goes through */
				if (!ready)
					verbose(r, "relay \"%s\" ready at position %lld", r->opt.name,
							(long long) r->store.checkpoint);
				else
					failures = 0;
				ready = true;
				break;
			case OUTCOME_DONE:
				return EXIT_SUCCESS;
			case OUTCOME_FATAL:
				return EXIT_FAILURE;
			case OUTCOME_RETRY:
				ready = false;
				if (r->store.conn && PQstatus(r->store.conn) != CONNECTION_OK)
					store_close(&r->store);
				back_off(r->stream.conn == NULL ? "nats-server is not reachable" :
						 r->store.conn == NULL ? "no usable connection to the event store" :
						 "nats-server did not take a publish or a KV put", ++failures);
				break;
		}
	}
	if (ready)
		publish_flush(r);
	return EXIT_SUCCESS;
}

int
main(int argc, char **argv)
{
	Relay		r;
	int			status;

	memset(&r, 0, sizeof(r));
	parse_options(argc, argv, &r.opt);
	r.stream.relay_token = escape_token(r.opt.name, (int) strlen(r.opt.name));
	install_signal_handlers();
	status = run(&r);
	stream_closing();
	if (r.opt.commands)
		commands_stop();
	store_close(&r.store);
	kv_close(&r);
	stream_close(&r.stream);
	nats_Close();
	return status;
}
