/*
 * launcher.h
 *		The workers' slots in shared memory, shared by the launcher
 *		(launcher.c), the workers (worker.c) and the backends that tell the
 *		launcher what happened to a database (dbwatch.c).
 */
#ifndef ES_LAUNCHER_H
#define ES_LAUNCHER_H

#include "eventsourced.h"

#define ES_MAX_WORKERS_PER_DB	8
/* Kinds of worker of one database: 0 is the notifier, k > 0 projection worker k */
#define ES_WORKER_KINDS			(ES_MAX_WORKERS_PER_DB + 1)

/* What a worker reported of itself (EsWorkerSlot.state) */
#define ES_SLOT_STARTING		0	/* registered; the notifier has not looked yet */
#define ES_SLOT_SERVING			1	/* the notifier found the extension */
#define ES_SLOT_NO_EXTENSION	2	/* the notifier found none and left */

/*
 * One worker's slot.  The launcher fills dboid, kind and generation before
 * it registers the worker (the same values travel in bgw_extra, so a
 * worker of a slot since given to another can tell); the worker sets pid
 * while it lives and state; running and hard_stopped outlive a worker, for
 * the one that replaces it (worker.c).  Under the launcher's lock, except
 * running and hard_stopped, which only the slot's worker writes.
 */
typedef struct EsWorkerSlot
{
	Oid			dboid;			/* InvalidOid: free */
	int			kind;
	uint32		generation;
	pid_t		pid;			/* 0 when no worker of the slot is alive */
	int			state;
	char		running[ES_MAX_TYPE_LEN + 1];	/* projection name, "" when none */
	bool		hard_stopped;
} EsWorkerSlot;

/* What the launcher puts in a worker's bgw_extra */
typedef struct EsWorkerExtra
{
	Oid			dboid;
	int			kind;
	uint32		generation;
} EsWorkerExtra;

/* Requests to the launcher (es_launcher_request) */
#define ES_LAUNCH_START			1	/* the extension was created in the database */
#define ES_LAUNCH_STOP			2	/* the extension was dropped from it */
#define ES_LAUNCH_RECHECK		3	/* the database was created, altered or left alone again */

/* launcher.c */
extern void es_launcher_init(void);
extern int	es_projection_workers(void);
extern EsWorkerSlot *es_launcher_claim_slot(int slot, const EsWorkerExtra *extra);
extern void es_launcher_report(EsWorkerSlot *slot, int state);
extern void es_launcher_request(int what, Oid dboid);
extern bool es_launcher_mark_leaving(Oid dboid);
extern void es_launcher_unmark_leaving(Oid dboid);

/* worker.c */
PGDLLEXPORT void eventsourced_worker_main(Datum arg);

#endif							/* ES_LAUNCHER_H */
