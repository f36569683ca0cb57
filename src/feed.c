/*
 * feed.c
 *		Positions for appended events, and the horizon below which the feed
 *		is complete.
 *
 * Positions (position.c) are unique and increase in the order they are
 * drawn, but transactions commit in any order: A draws 10,
 * B draws 11 and commits first.  A reader paging by position must not return
 * 11 and move past 10.  Readers therefore only return positions below the
 * horizon: the lowest position that an in-flight appending transaction may
 * still commit.
 *
 * With shared_preload_libraries (the recommended set-up) the horizon lives
 * in shared memory, one slot per backend, and appenders never wait:
 *
 *	appender: slot := PENDING; barrier; p := next position; slot := p;
 *			  ... commit or abort (now visible to new snapshots) ...;
 *			  barrier; slot := 0.
 *	reader:   m := highest position in the position index (any state);
 *			  barrier; h := m + 1, lowered to every slot of this database
 *			  (waiting out a PENDING slot, a window of a few instructions);
 *			  then take the snapshot that the scan uses.
 *
 * Any position p < h is <= m, so it was drawn before the reader read m and
 * its transaction had announced itself before the reader read the slots.
 * The slot then held a value <= p (impossible, since h > p) or was already
 * cleared: the transaction had ended before the reader's snapshot was taken,
 * and its rows are visible to the scan if it committed.  Positions must only
 * grow in draw order across backends: the sequence must not cache values
 * per backend (CACHE 1, the default) and must never be set backwards; the
 * shared blocks of position.c keep that order.
 *
 * Without shared memory (library not preloaded) the fallback is a lock
 * barrier: every appending transaction holds a shared advisory lock until
 * it ends, and a reader briefly takes it exclusively and takes its snapshot
 * while holding it, so no append is in flight at that moment.  That is
 * sound, but a reader waits for in-flight appends and new appends queue
 * behind a waiting reader.  The horizon is then just above the highest
 * position drawn.
 *
 * From 0.5.0 on, snapshot writes draw positions too (their change numbers,
 * snapchanges.c).  A reader of events takes "the highest position" above
 * from the position index, a reader of snapshot changes from the change
 * index: any of its positions at or below that index's highest key was
 * drawn before the reader read it, which is all the argument needs; a
 * position drawn by the other kind is only a gap.  feed_horizon() reads
 * both.
 *
 * Transactions that appended cannot be prepared (two-phase commit): the
 * horizon would be held by a transaction no backend owns any more.
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/itup.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/* A slot's value while its backend draws its first position */
#define ES_FEED_PENDING		PG_UINT64_MAX

typedef struct EsFeedSlot
{
	pg_atomic_uint32 dboid;		/* database of the backend using the slot */
	pg_atomic_uint64 low;		/* 0, PENDING, or the first position drawn */
} EsFeedSlot;

typedef struct EsFeedShared
{
	int			nslots;
	EsFeedSlot	slot[FLEXIBLE_ARRAY_MEMBER];
} EsFeedShared;

static EsFeedShared *feed_shared = NULL;
static bool announced = false;	/* this transaction holds its slot/lock */
static SubTransactionId announced_subid;	/* the subtransaction that holds it */

/* Shared memory needed for one slot per backend */
static Size
es_feed_shmem_size(void)
{
	return add_size(offsetof(EsFeedShared, slot),
					mul_size(MaxBackends, sizeof(EsFeedSlot)));
}

/* Create or attach to the shared horizon state */
static void
es_feed_shmem_attach(void *ptr, bool found)
{
	feed_shared = ptr;
	if (found)
		return;
	feed_shared->nslots = MaxBackends;
	for (int i = 0; i < MaxBackends; i++)
	{
		pg_atomic_init_u32(&feed_shared->slot[i].dboid, InvalidOid);
		pg_atomic_init_u64(&feed_shared->slot[i].low, 0);
	}
}

static const EsShmemPart feed_part = {
	"eventsourced feed", es_feed_shmem_size, 0, es_feed_shmem_attach
};

/* The advisory lock tag of the fallback barrier, per database */
static void
es_feed_lock_tag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, 0, 0, ES_LOCK_FEED);
}

/* Our slot, or fail if this process has none (not a regular backend) */
static EsFeedSlot *
es_feed_my_slot(void)
{
	int			idx = MyProc != NULL ? MyProc->pgprocno : -1;

	if (idx < 0 || idx >= feed_shared->nslots)
		elog(ERROR, "eventsourced: process %d has no feed slot", MyProcPid);
	return &feed_shared->slot[idx];
}

/* Give up the slot (the fallback lock goes with the (sub)transaction) */
static void
es_feed_release(void)
{
	if (feed_shared != NULL && MyProc != NULL)
	{
		pg_memory_barrier();
		pg_atomic_write_u64(&es_feed_my_slot()->low, 0);
	}
	announced = false;
}

/* Release the horizon at the end of the transaction that appended */
static void
es_feed_xact_callback(XactEvent event, void *arg)
{
	if (!announced)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot PREPARE a transaction that appended events or saved snapshots"),
					 errdetail("A prepared transaction would hold back the event feed with no backend to release it.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			es_feed_release();
			break;
		default:
			break;
	}
}

/*
 * A subtransaction that announced and aborts takes its appends and its
 * fallback lock with it: release, so the next append announces again.
 * One that commits hands the announcement to its parent.
 */
static void
es_feed_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	if (!announced || mySubid != announced_subid)
		return;
	if (event == SUBXACT_EVENT_COMMIT_SUB)
		announced_subid = parentSubid;
	else if (event == SUBXACT_EVENT_ABORT_SUB)
		es_feed_release();
}

/* Never leave a slot set behind when the backend exits */
static void
es_feed_shmem_exit(int code, Datum arg)
{
	if (announced)
		es_feed_release();
}

/* Hook into shared memory (when preloaded) and transaction ends */
void
es_feed_init(void)
{
	RegisterXactCallback(es_feed_xact_callback, NULL);
	RegisterSubXactCallback(es_feed_subxact_callback, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	es_shmem_register(&feed_part);
	before_shmem_exit(es_feed_shmem_exit, (Datum) 0);
}

/* Announce this transaction as an appender, once per transaction */
static void
es_feed_announce(void)
{
	LOCKTAG		tag;

	if (feed_shared != NULL)
	{
		EsFeedSlot *slot = es_feed_my_slot();

		pg_atomic_write_u32(&slot->dboid, MyDatabaseId);
		pg_write_barrier();
		pg_atomic_write_u64(&slot->low, ES_FEED_PENDING);
		pg_memory_barrier();
		return;
	}
	es_feed_lock_tag(&tag);
	(void) LockAcquire(&tag, ShareLock, false, false);
}

/*
 * Draw the position of the next appended event (or snapshot change): from
 * this database's block in shared memory, or with from_sequence straight
 * from the sequence (draw_snapshot_change(), during a restore).
 */
int64
es_feed_draw_position(Oid seqoid, bool from_sequence)
{
	int64		pos;
	bool		first = !announced;

	if (first)
	{
		/* any wait for a new block of positions happens before announcing */
		if (!from_sequence)
			es_position_prepare(seqoid);
		es_feed_announce();
		announced = true;
		announced_subid = GetCurrentSubTransactionId();
	}
	pos = from_sequence ? es_position_from_sequence(seqoid) : es_position_next(seqoid);
	if (first && feed_shared != NULL)
		pg_atomic_write_u64(&es_feed_my_slot()->low, (uint64) pos);
	return pos;
}

/* The highest key of a bigint-keyed unique index, committed or not (0 if none) */
static int64
es_feed_index_max(Oid heapid, Oid indexid)
{
	Relation	heap = table_open(heapid, AccessShareLock);
	Relation	index = index_open(indexid, AccessShareLock);
	IndexScanDesc scan;
	int64		max = 0;

	scan = index_beginscan(heap, index, SnapshotAny, 0, 0);
	scan->xs_want_itup = true;
	index_rescan(scan, NULL, 0, NULL, 0);
	if (index_getnext_tid(scan, BackwardScanDirection) != NULL)
	{
		bool		isnull;
		Datum		d = index_getattr(scan->xs_itup, 1, scan->xs_itupdesc, &isnull);

		if (!isnull)
			max = DatumGetInt64(d);
	}
	index_endscan(scan);
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	return max;
}

/*
 * The highest position drawn and written, committed or not (0 if none),
 * of the events and/or (from 0.5.0 on) of the snapshot changes, which draw
 * from the same positions (snapchanges.c).  A reader of one of the two
 * needs only its own index: any of its positions at or below that index's
 * highest key was drawn before the reader read it, which is all the
 * argument above asks; the other's positions are gaps to it.
 */
static int64
es_feed_max_position(int which)
{
	const EsCatalog *cat = es_catalog();
	int64		max = 0;

	if (which & ES_FEED_EVENTS)
		max = es_feed_index_max(cat->events, cat->events_position_key);
	if ((which & ES_FEED_SNAPSHOTS) && OidIsValid(cat->snapshots_change_key))
		max = Max(max, es_feed_index_max(cat->snapshots, cat->snapshots_change_key));
	return max;
}

/* A slot's settled value: waits out the short PENDING window */
static uint64
es_feed_slot_value(EsFeedSlot *slot)
{
	uint64		v;
	int			spins = 0;

	while ((v = pg_atomic_read_u64(&slot->low)) == ES_FEED_PENDING)
	{
		CHECK_FOR_INTERRUPTS();
		if (++spins < 1000)
			pg_spin_delay();
		else
			pg_usleep(10);
	}
	return v;
}

/*
 * The current horizon from shared memory (exclusive bound).  Our own slot
 * is skipped: a transaction reads its own appends, as with any query.
 */
static int64
es_feed_shared_horizon(int which)
{
	uint64		horizon = (uint64) es_feed_max_position(which) + 1;
	int			self = MyProc->pgprocno;

	pg_memory_barrier();
	for (int i = 0; i < feed_shared->nslots; i++)
	{
		EsFeedSlot *slot = &feed_shared->slot[i];
		uint64		v;

		if (i == self || pg_atomic_read_u64(&slot->low) == 0)
			continue;
		pg_read_barrier();
		if (pg_atomic_read_u32(&slot->dboid) != MyDatabaseId)
			continue;
		v = es_feed_slot_value(slot);
		if (v != 0 && v < horizon)
			horizon = v;
	}
	return (int64) horizon;
}

/*
 * A registered snapshot for a feed scan, and the horizon that goes with it:
 * the scan must return only positions below *horizon.  "which" says what
 * the scan reads (ES_FEED_EVENTS, ES_FEED_SNAPSHOTS or both).  The caller
 * unregisters the snapshot.
 */
Snapshot
es_feed_snapshot(int which, int64 *horizon)
{
	Snapshot	snap;

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the event feed cannot be read on a standby"),
				 errdetail("Which positions are still in flight is known only on the primary; "
						   "a standby could return an event and later one with a lower position."),
				 errhint("Read events_by_type() and read_all() on the primary; "
						 "events_by_id() and last_seq_no() work on a standby.")));
	if (es_events_subscribed())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the event feed cannot be read where eventsourced.events is a logical replication target"),
				 errdetail("The publisher's transactions arrive in commit order; which positions are still in flight is known only on the publisher."),
				 errhint("Read events_by_type() and read_all() on the publisher; "
						 "events_by_id() and last_seq_no() work here.")));
	/*
	 * This transaction's appends of the current command (an append and a
	 * read in one statement) count in the horizon: make them visible to
	 * the scan, or a reader would resume past events it did not see.
	 */
	if (announced)
		CommandCounterIncrement();
	if (feed_shared != NULL)
	{
		*horizon = es_feed_shared_horizon(which);
		pg_memory_barrier();
		return RegisterSnapshot(GetLatestSnapshot());
	}
	else
	{
		LOCKTAG		tag;

		es_feed_lock_tag(&tag);
		/*
		 * A transaction lock: an error before the release cannot leak it.
		 * No append is in flight while we hold it, so every position drawn
		 * so far belongs to a transaction that has ended, and any drawn
		 * later is higher: the horizon is just above the highest one.
		 */
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
		snap = RegisterSnapshot(GetLatestSnapshot());
		*horizon = es_feed_max_position(which) + 1;
		LockRelease(&tag, ExclusiveLock, false);
		return snap;
	}
}

PG_FUNCTION_INFO_V1(eventsourced_feed_horizon);

/* SQL access to the horizon, for monitoring how far readers may go */
Datum
eventsourced_feed_horizon(PG_FUNCTION_ARGS)
{
	int64		horizon;
	Snapshot	snap = es_feed_snapshot(ES_FEED_EVENTS | ES_FEED_SNAPSHOTS, &horizon);

	UnregisterSnapshot(snap);
	PG_RETURN_INT64(horizon);
}
