/*
 * position.c
 *		Positions for appended events, handed out from shared memory in
 *		blocks reserved from the position sequence.
 *
 * Without the library preloaded every event draws nextval() of
 * eventsourced.events_position_seq.  Preloaded, each database that appends
 * gets a range [next, limit) in shared memory; an append takes next under a
 * spinlock, and when the range is used up one backend reserves the next
 * ES_POSITION_BLOCK positions: nextval() gives the first one, and setval()
 * moves the sequence to the last one.  Refills of a database serialize on
 * a heavyweight lock, and the feed makes sure a position is ready before a
 * transaction announces itself, so waits in that window are rare.  So:
 *
 * - Positions are handed out in increasing order across all backends of a
 *   database, which the feed horizon (feed.c) relies on: a new block starts
 *   above the sequence value, and the sequence is at or above every
 *   position handed out before.
 * - The sequence always holds the highest position reserved.  Its update is
 *   WAL-logged before any event using the block, so after a crash, a
 *   restore of a dump or a promotion, new positions start above every
 *   stored one; the unused rest of a block is a gap, as with any sequence.
 * - A range remembers the sequence it came from: after DROP EXTENSION and
 *   CREATE EXTENSION the old range is never used again.
 * - Any other change to the events table (the statement trigger of
 *   seqcache.c) drops the rest of the block, so a store emptied with
 *   TRUNCATE and given a restarted sequence starts again from it.
 * - A sequence given a new file in the current transaction (ALTER SEQUENCE
 *   ... RESTART, not committed yet) never fills the range: that
 *   transaction draws nextval() per event, and a rollback leaves nothing
 *   behind.
 *
 * The table has ES_POSITION_DBS ranges, each kept for its database until a
 * restart (a dropped database's range is emptied).  A database finding the
 * table full draws nextval() per event, which is just as correct: it never
 * gets a range later, and every range ends below its sequence value.
 */
#include "eventsourced.h"

#include "access/relation.h"
#include "commands/sequence.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#define ES_POSITION_BLOCK	1024	/* positions reserved at a time */
#define ES_POSITION_DBS		64		/* databases with a range */

/* The positions one database may hand out: [next, limit) of sequence seqid */
typedef struct EsPositionRange
{
	slock_t		mutex;			/* protects seqid, next, limit */
	Oid			dboid;			/* InvalidOid: unused; set once, under the LWLock */
	Oid			seqid;
	int64		next;
	int64		limit;
} EsPositionRange;

typedef struct EsPositionShared
{
	LWLock	   *lock;			/* protects dboid of every range */
	EsPositionRange ranges[ES_POSITION_DBS];
} EsPositionShared;

static EsPositionShared *position_shared = NULL;
static EsPositionRange *my_range = NULL;	/* this database's, once found */
static bool no_range = false;	/* the table was full when we looked */

/* Shared memory of the range table */
static Size
es_position_shmem_size(void)
{
	return sizeof(EsPositionShared);
}

/* Create or attach to the range table */
static void
es_position_shmem_attach(void *ptr, bool found)
{
	position_shared = ptr;
	if (found)
		return;
	position_shared->lock = &GetNamedLWLockTranche("eventsourced positions")->lock;
	for (int i = 0; i < ES_POSITION_DBS; i++)
	{
		SpinLockInit(&position_shared->ranges[i].mutex);
		position_shared->ranges[i].dboid = InvalidOid;
		position_shared->ranges[i].seqid = InvalidOid;
		position_shared->ranges[i].next = 0;
		position_shared->ranges[i].limit = 0;
	}
}

static const EsShmemPart position_part = {
	"eventsourced positions", es_position_shmem_size, 1, es_position_shmem_attach
};

/* Give up the rest of a range's block: the next position needs a refill */
static void
es_position_empty(EsPositionRange *r)
{
	SpinLockAcquire(&r->mutex);
	r->next = r->limit;
	SpinLockRelease(&r->mutex);
}

/*
 * A dropped database's range is emptied: a database created later with its
 * OID (cloned from the same template: with the same sequence OID) refills
 * it from its own sequence.  The range stays with the OID and is not given
 * to another database: a backend that found the table full draws from its
 * sequence per event, which is only sound while its database never gets a
 * range.
 */
void
es_position_database_dropped(Oid dboid)
{
	if (position_shared == NULL)
		return;
	LWLockAcquire(position_shared->lock, LW_SHARED);
	for (int i = 0; i < ES_POSITION_DBS; i++)
		if (position_shared->ranges[i].dboid == dboid)
			es_position_empty(&position_shared->ranges[i]);
	LWLockRelease(position_shared->lock);
}

/* Ask for the range table when the library is preloaded */
void
es_position_init(void)
{
	if (process_shared_preload_libraries_in_progress)
		es_shmem_register(&position_part);
}

/*
 * This database's range, claimed on first use when claim is set; NULL when
 * it has none (the table is full, or claim is not set).
 */
static EsPositionRange *
es_position_my_range(bool claim)
{
	EsPositionRange *free_range = NULL;

	LWLockAcquire(position_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ES_POSITION_DBS && my_range == NULL; i++)
	{
		EsPositionRange *r = &position_shared->ranges[i];

		if (r->dboid == MyDatabaseId)
			my_range = r;
		else if (r->dboid == InvalidOid && free_range == NULL)
			free_range = r;
	}
	if (my_range == NULL && free_range != NULL && claim)
	{
		free_range->dboid = MyDatabaseId;
		my_range = free_range;
	}
	LWLockRelease(position_shared->lock);
	if (claim)
		no_range = (my_range == NULL);
	return my_range;
}

/* Take the next position of the range, if it has one from this sequence */
static bool
es_position_take(EsPositionRange *r, Oid seqid, int64 *pos)
{
	bool		taken = false;

	SpinLockAcquire(&r->mutex);
	if (r->seqid == seqid && r->next < r->limit)
	{
		*pos = r->next++;
		taken = true;
	}
	SpinLockRelease(&r->mutex);
	return taken;
}

/*
 * Move the sequence to the last position of a reserved block.  setval()
 * runs as the sequence's owner: appenders need no privilege on it.
 */
static void
es_position_reserve(Oid seqid, int64 last)
{
	Oid			save_userid;
	int			save_sec_context;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(es_relation_owner(seqid),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	(void) DirectFunctionCall2(setval_oid, ObjectIdGetDatum(seqid), Int64GetDatum(last));
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/* Positions left in the range for this sequence */
static int64
es_position_available(EsPositionRange *r, Oid seqid)
{
	int64		n;

	SpinLockAcquire(&r->mutex);
	n = r->seqid == seqid ? r->limit - r->next : 0;
	SpinLockRelease(&r->mutex);
	return n;
}

/*
 * Whether the (locked) sequence got a new file in this transaction, as
 * ALTER SEQUENCE ... RESTART does: its state is not committed yet.
 */
static bool
es_position_seq_uncommitted(Oid seqid)
{
	Relation	seq = relation_open(seqid, NoLock);
	bool		uncommitted;

	uncommitted = seq->rd_createSubid != InvalidSubTransactionId ||
		seq->rd_firstRelfilenodeSubid != InvalidSubTransactionId;
	relation_close(seq, NoLock);
	return uncommitted;
}

/*
 * Give the range a new block, unless another backend just did.  Refills of
 * a database serialize on a heavyweight lock (interruptible, seen by the
 * deadlock detector), held only for the refill.  False when the sequence's
 * state is not committed: a block taken from it must not outlive a
 * rollback, so the caller draws from the sequence itself.
 */
static bool
es_position_refill(EsPositionRange *r, Oid seqid)
{
	LOCKTAG		tag;

	/* the sequence's lock first, always: no lock-order inversion with DDL */
	LockRelationOid(seqid, RowExclusiveLock);
	if (es_position_seq_uncommitted(seqid))
		return false;
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 0, ES_LOCK_POSITION);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	if (es_position_available(r, seqid) <= 0)
	{
		int64		first = nextval_internal(seqid, false);

		if (first > PG_INT64_MAX - ES_POSITION_BLOCK)
			ereport(ERROR,
					(errcode(ERRCODE_SEQUENCE_GENERATOR_LIMIT_EXCEEDED),
					 errmsg("event positions are exhausted")));
		es_position_reserve(seqid, first + ES_POSITION_BLOCK - 1);
		SpinLockAcquire(&r->mutex);
		r->seqid = seqid;
		r->next = first;
		r->limit = first + ES_POSITION_BLOCK;
		SpinLockRelease(&r->mutex);
	}
	LockRelease(&tag, ExclusiveLock, false);
	return true;
}

/* This database's range, or NULL when positions come from the sequence */
static EsPositionRange *
es_position_range(void)
{
	if (position_shared == NULL || no_range)
		return NULL;
	return my_range != NULL ? my_range : es_position_my_range(true);
}

/*
 * Make sure the range has a position, so that the next es_position_next()
 * need not wait: the feed calls this before announcing a transaction.
 */
void
es_position_prepare(Oid seqid)
{
	EsPositionRange *r = es_position_range();

	if (r != NULL && es_position_available(r, seqid) <= 0)
		(void) es_position_refill(r, seqid);
}

/*
 * One position straight from the sequence.  The largest bigint is never
 * handed out: the feed's horizon is one above the highest position.
 */
int64
es_position_from_sequence(Oid seqid)
{
	int64		pos = nextval_internal(seqid, false);

	if (pos == PG_INT64_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_SEQUENCE_GENERATOR_LIMIT_EXCEEDED),
				 errmsg("event positions are exhausted")));
	return pos;
}

/* The next position of this database, from shared memory or the sequence */
int64
es_position_next(Oid seqid)
{
	EsPositionRange *r = es_position_range();
	int64		pos;

	if (r == NULL)
		return es_position_from_sequence(seqid);
	while (!es_position_take(r, seqid, &pos))
		if (!es_position_refill(r, seqid))
			return es_position_from_sequence(seqid);
	return pos;
}

/*
 * The events table changed outside append() (a purge, a restore, TRUNCATE
 * before ALTER SEQUENCE ... RESTART): give up this database's block, so the
 * next position comes from the sequence as it is then.
 */
void
es_position_forget(void)
{
	EsPositionRange *r;

	if (position_shared == NULL || no_range)
		return;
	r = my_range != NULL ? my_range : es_position_my_range(false);
	if (r != NULL)
		es_position_empty(r);
}
