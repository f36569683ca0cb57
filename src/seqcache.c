/*
 * seqcache.c
 *		The last seq_no of an entity as a writer holding the entity lock
 *		learns it: remembered by this transaction, found in a shared cache,
 *		or looked up in the primary key index.
 *
 * The shared cache (library preloaded, eventsourced.seq_cache_size > 0)
 * maps (database, events table, entity) to the entity's last seq_no, so an
 * append or command on an entity written recently needs no index probe.
 * Why an entry is true when it is used:
 *
 * - Only a holder of the entity lock reads an entity's entry or stores a
 *   value in it; anyone may remove an entry (a miss is always safe).
 * - A transaction stores the last seq_no it wrote when it commits
 *   (XACT_EVENT_COMMIT, which runs before its locks are released).  One
 *   that aborts stores nothing, so the entry keeps the value from before
 *   it, which is still true.  An entity written in a subtransaction that
 *   aborted is removed instead.
 * - Every other change to the events table (an INSERT, UPDATE, DELETE,
 *   TRUNCATE or COPY statement, such as a purge) fires a statement trigger
 *   that bumps a global generation when the statement ends.  An entry
 *   carries the generation read before its value was computed, and an
 *   entry of an older generation is a miss.
 *
 * Locking: the table is an array of buckets of ES_SEQCACHE_WAYS entries;
 * bucket b is protected by LWLock b % ES_SEQCACHE_LOCKS, shared to read,
 * exclusive to store or remove.  The generation is an atomic counter.
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#define ES_SEQCACHE_WAYS	16	/* entries per bucket */
#define ES_SEQCACHE_LOCKS	128 /* LWLocks over the buckets */
#define ES_SEQCACHE_KEY_LEN 64	/* type + id bytes of a cacheable entity */
#define ES_SEQCACHE_PENDING 64	/* entities a transaction publishes */

/* An entity's identity as the cache sees it */
typedef struct EsSeqKey
{
	uint32		hash;
	Oid			dboid;
	Oid			relid;
	uint16		type_len;
	uint16		id_len;
	char		bytes[ES_SEQCACHE_KEY_LEN];	/* type, then id */
} EsSeqKey;

/* One cached entity, in use when its bucket's tag for it is not 0 */
typedef struct EsSeqEntry
{
	EsSeqKey	key;
	uint64		generation;
	int64		last;
} EsSeqEntry;

/*
 * A bucket starts with one cache line holding a 16-bit tag per way (0:
 * free), so a lookup reads that line and only the entries whose tag
 * matches, not all of them.
 */
typedef struct EsSeqBucket
{
	uint16		tags[ES_SEQCACHE_WAYS];
	uint32		victim;			/* next way to replace when full */
	char		pad[PG_CACHE_LINE_SIZE - ES_SEQCACHE_WAYS * sizeof(uint16) - sizeof(uint32)];
	EsSeqEntry	ways[ES_SEQCACHE_WAYS];
} EsSeqBucket;

StaticAssertDecl(offsetof(EsSeqBucket, ways) == PG_CACHE_LINE_SIZE,
				 "the tags of a bucket fill its first cache line");
StaticAssertDecl(sizeof(EsSeqBucket) % PG_CACHE_LINE_SIZE == 0,
				 "buckets start on a cache line");

typedef struct EsSeqShared
{
	pg_atomic_uint64 generation;
	LWLockPadded *locks;
	uint32		nbuckets;
	/* then, from the next cache line on, nbuckets buckets */
} EsSeqShared;

/* An entity this transaction appended to, to publish at commit */
typedef struct EsSeqPending
{
	EsSeqKey	key;
	uint64		generation;
	int64		last;
	SubTransactionId subid;		/* latest subtransaction that appended */
	bool		remove;			/* a subtransaction that appended aborted */
} EsSeqPending;

static int	seq_cache_size = 131072;
static EsSeqShared *seq_shared = NULL;
static EsSeqBucket *seq_buckets = NULL;	/* cache-line aligned */

/*
 * The entity this transaction looked up last, while it holds the entity
 * lock (reset when the transaction or a subtransaction ends badly).
 */
static struct
{
	bool		valid;
	Oid			relid;			/* the events table it was found in */
	int			type_len;		/* 0: none (names are never empty) */
	int			id_len;
	char		type[ES_MAX_TYPE_LEN];
	char		id[ES_MAX_ID_LEN];
	int64		last;
	uint64		generation;		/* read before last was found */
	bool		cacheable;
	EsSeqKey	key;
} known;

static EsSeqPending pending[ES_SEQCACHE_PENDING];
static int	npending = 0;
static uint64 stat_hits = 0;
static uint64 stat_misses = 0;

/* Memory of the shared cache */
static Size
es_seqcache_shmem_size(void)
{
	uint32		nbuckets = (seq_cache_size + ES_SEQCACHE_WAYS - 1) / ES_SEQCACHE_WAYS;

	return add_size(CACHELINEALIGN(sizeof(EsSeqShared)), mul_size(nbuckets, sizeof(EsSeqBucket)));
}

/* Create or attach to the shared cache */
static void
es_seqcache_shmem_attach(void *ptr, bool found)
{
	EsSeqShared *s = ptr;

	if (!found)
	{
		s->nbuckets = (seq_cache_size + ES_SEQCACHE_WAYS - 1) / ES_SEQCACHE_WAYS;
		pg_atomic_init_u64(&s->generation, 1);
		s->locks = GetNamedLWLockTranche("eventsourced seq cache");
	}
	seq_buckets = (EsSeqBucket *) ((char *) s + CACHELINEALIGN(sizeof(EsSeqShared)));
	if (!found)
		memset(seq_buckets, 0, mul_size(s->nbuckets, sizeof(EsSeqBucket)));
	seq_shared = s->nbuckets > 0 ? s : NULL;
}

static const EsShmemPart seqcache_part = {
	"eventsourced seq cache", es_seqcache_shmem_size, ES_SEQCACHE_LOCKS,
	es_seqcache_shmem_attach
};

/* Fill a key for the entity; false when it is too long to cache */
static bool
es_seqcache_key(const EsEntity *entity, Oid relid, EsSeqKey *key)
{
	int			tlen = VARSIZE_ANY_EXHDR(entity->type);
	int			ilen = VARSIZE_ANY_EXHDR(entity->id);

	if (tlen + ilen > ES_SEQCACHE_KEY_LEN)
		return false;
	memset(key, 0, sizeof(EsSeqKey));
	key->dboid = MyDatabaseId;
	key->relid = relid;
	key->type_len = tlen;
	key->id_len = ilen;
	memcpy(key->bytes, VARDATA_ANY(entity->type), tlen);
	memcpy(key->bytes + tlen, VARDATA_ANY(entity->id), ilen);
	key->hash = hash_combine(hash_bytes((unsigned char *) key->bytes, tlen + ilen),
							 hash_combine(tlen, relid));
	return true;
}

/* Whether two keys name the same entity of the same table */
static bool
es_seqcache_key_equal(const EsSeqKey *a, const EsSeqKey *b)
{
	return a->hash == b->hash && a->dboid == b->dboid && a->relid == b->relid &&
		a->type_len == b->type_len && a->id_len == b->id_len &&
		memcmp(a->bytes, b->bytes, a->type_len + a->id_len) == 0;
}

/* The bucket of a key and the lock protecting it */
static EsSeqBucket *
es_seqcache_bucket(const EsSeqKey *key, LWLock **lock)
{
	uint32		b = key->hash % seq_shared->nbuckets;

	*lock = &seq_shared->locks[b % ES_SEQCACHE_LOCKS].lock;
	return &seq_buckets[b];
}

/*
 * The tag of a key: 16 bits of its hash mixed again, so that they do not
 * repeat the bits that chose the bucket; never 0 (a free way).
 */
static uint16
es_seqcache_tag(const EsSeqKey *key)
{
	uint16		tag = (uint16) (murmurhash32(key->hash) >> 16);

	return tag != 0 ? tag : 1;
}

/* The way of a key in its bucket, or -1 */
static int
es_seqcache_find(EsSeqBucket *bucket, const EsSeqKey *key)
{
	uint16		tag = es_seqcache_tag(key);

	for (int i = 0; i < ES_SEQCACHE_WAYS; i++)
		if (bucket->tags[i] == tag && es_seqcache_key_equal(&bucket->ways[i].key, key))
			return i;
	return -1;
}

/* The cached last seq_no of a key, if it is of the current generation */
static bool
es_seqcache_get(const EsSeqKey *key, uint64 generation, int64 *last)
{
	LWLock	   *lock;
	EsSeqBucket *bucket = es_seqcache_bucket(key, &lock);
	int			way;
	bool		hit = false;

	LWLockAcquire(lock, LW_SHARED);
	way = es_seqcache_find(bucket, key);
	if (way >= 0 && bucket->ways[way].generation == generation)
	{
		*last = bucket->ways[way].last;
		hit = true;
	}
	LWLockRelease(lock);
	return hit;
}

/*
 * Store a key's last seq_no, or remove its entry when remove is set or the
 * value was computed in an older generation.  Runs in commit callbacks, so
 * it must not fail.
 */
static void
es_seqcache_put(const EsSeqKey *key, uint64 generation, int64 last, bool remove)
{
	LWLock	   *lock;
	EsSeqBucket *bucket = es_seqcache_bucket(key, &lock);
	int			way;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	way = es_seqcache_find(bucket, key);
	if (remove || generation != pg_atomic_read_u64(&seq_shared->generation))
	{
		if (way >= 0)
			bucket->tags[way] = 0;
	}
	else
	{
		for (int i = 0; way < 0 && i < ES_SEQCACHE_WAYS; i++)
			if (bucket->tags[i] == 0)
				way = i;
		if (way < 0)
			way = bucket->victim++ % ES_SEQCACHE_WAYS;
		bucket->tags[way] = es_seqcache_tag(key);
		bucket->ways[way].key = *key;
		bucket->ways[way].generation = generation;
		bucket->ways[way].last = last;
	}
	LWLockRelease(lock);
}

/* Whether the remembered names are this entity's */
static bool
es_known_is(const EsEntity *entity)
{
	return known.type_len == VARSIZE_ANY_EXHDR(entity->type) &&
		known.id_len == VARSIZE_ANY_EXHDR(entity->id) &&
		memcmp(known.type, VARDATA_ANY(entity->type), known.type_len) == 0 &&
		memcmp(known.id, VARDATA_ANY(entity->id), known.id_len) == 0;
}

/* Remember an entity's names (validated by the caller, so they fit) */
static void
es_known_names(const EsEntity *entity)
{
	if (VARSIZE_ANY_EXHDR(entity->type) > ES_MAX_TYPE_LEN ||
		VARSIZE_ANY_EXHDR(entity->id) > ES_MAX_ID_LEN)
		elog(ERROR, "eventsourced: entity name longer than its limit");
	known.type_len = VARSIZE_ANY_EXHDR(entity->type);
	known.id_len = VARSIZE_ANY_EXHDR(entity->id);
	memcpy(known.type, VARDATA_ANY(entity->type), known.type_len);
	memcpy(known.id, VARDATA_ANY(entity->id), known.id_len);
}

/* This transaction's pending publication of a key, or NULL */
static EsSeqPending *
es_seqcache_pending(const EsSeqKey *key)
{
	for (int i = 0; i < npending; i++)
		if (es_seqcache_key_equal(&pending[i].key, key))
			return &pending[i];
	return NULL;
}

/*
 * A cacheable entity's last seq_no without the index: what this transaction
 * wrote to it, else the shared entry (unless this transaction's writes to it
 * were partly undone).  Sets the generation the value belongs to.
 */
static bool
es_seqcache_lookup(const EsSeqKey *key, int64 *last, uint64 *generation)
{
	EsSeqPending *p = es_seqcache_pending(key);

	*generation = pg_atomic_read_u64(&seq_shared->generation);
	if (p != NULL && !p->remove)
	{
		*last = p->last;
		*generation = p->generation;
		return true;
	}
	return p == NULL && es_seqcache_get(key, *generation, last);
}

/* The last seq_no from the primary key index */
static int64
es_index_last_seq_no(const EsEntity *entity, int64 hint)
{
	const EsCatalog *cat = es_catalog();
	Relation	events = table_open(cat->events, AccessShareLock);
	Relation	pkey = index_open(cat->events_pkey, AccessShareLock);
	int64		last;

	last = hint >= 0 ? es_last_seq_no_hinted(events, pkey, entity, hint)
		: es_last_seq_no(events, pkey, entity);
	index_close(pkey, AccessShareLock);
	table_close(events, AccessShareLock);
	return last;
}

/*
 * The last seq_no of an entity whose lock the caller holds.  hint is a
 * likely value (the writer's expected seq_no, a cached state's seq_no) for
 * the index lookup, or -1.  The index is opened only on a cache miss.
 */
int64
es_locked_last_seq_no(const EsEntity *entity, int64 hint)
{
	uint64		generation = 0;
	int64		last;
	bool		cacheable;
	EsSeqKey	key;

	Oid			relid = es_catalog()->events;

	if (known.valid && known.relid == relid && es_known_is(entity))
		return known.last;
	cacheable = seq_shared != NULL && es_seqcache_key(entity, relid, &key);
	if (cacheable && es_seqcache_lookup(&key, &last, &generation))
		stat_hits++;
	else
	{
		stat_misses++;
		last = es_index_last_seq_no(entity, hint);
	}
	es_known_names(entity);
	known.valid = true;
	known.relid = relid;
	known.last = last;
	known.generation = generation;
	known.cacheable = cacheable;
	if (cacheable)
		known.key = key;
	return last;
}

/*
 * After appending under the entity lock (and es_locked_last_seq_no()):
 * the entity's new last seq_no, published to the shared cache at commit.
 */
void
es_locked_last_set(const EsEntity *entity, int64 last)
{
	EsSeqPending *p;

	Assert(known.valid && es_known_is(entity));
	known.last = last;
	if (!known.cacheable)
		return;
	p = es_seqcache_pending(&known.key);
	if (p == NULL && npending == ES_SEQCACHE_PENDING)
	{
		/* untracked: its entry must not outlive this write */
		es_seqcache_put(&known.key, 0, 0, true);
		return;
	}
	if (p == NULL)
	{
		p = &pending[npending++];
		p->key = known.key;
		p->generation = known.generation;
	}
	p->generation = Min(p->generation, known.generation);
	p->last = last;
	p->subid = GetCurrentSubTransactionId();
	p->remove = false;
}

/* Publish (or remove) what this transaction wrote, then forget it */
static void
es_seqcache_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			for (int i = 0; i < npending && seq_shared != NULL; i++)
				es_seqcache_put(&pending[i].key, pending[i].generation,
								pending[i].last, pending[i].remove);
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			npending = 0;
			known.valid = false;
			break;
		default:
			break;
	}
}

/* A subtransaction aborted: its appends and maybe its entity locks are gone */
static void
es_seqcache_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg)
{
	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	known.valid = false;
	for (int i = 0; i < npending; i++)
		if (pending[i].subid >= mySubid)
			pending[i].remove = true;
}

/* GUC, shared memory and transaction hooks */
void
es_seqcache_init(void)
{
	RegisterXactCallback(es_seqcache_xact_callback, NULL);
	RegisterSubXactCallback(es_seqcache_subxact_callback, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomIntVariable("eventsourced.seq_cache_size",
							"Entities whose last seq_no is cached in shared memory (0: no cache).",
							NULL, &seq_cache_size, 131072, 0, 64 * 1024 * 1024,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	es_shmem_register(&seqcache_part);
}

/* Make every entry stale: entries of an older generation are misses */
static void
es_seqcache_invalidate_all(void)
{
	if (seq_shared != NULL)
		pg_atomic_fetch_add_u64(&seq_shared->generation, 1);
}

/*
 * This transaction's own knowledge is stale too when it changed the table
 * itself (a purge in the transaction that appended): forget the entity it
 * looked up last, and have its pending entries removed at commit instead
 * of published.
 */
static void
es_seqcache_forget_own(void)
{
	known.valid = false;
	for (int i = 0; i < npending; i++)
		pending[i].remove = true;
}

/*
 * A dropped database's entries are stale: a database created later may get
 * its OID, and, cloned from the same template, the same events table OID.
 */
void
es_seqcache_database_dropped(Oid dboid)
{
	es_seqcache_invalidate_all();
}

PG_FUNCTION_INFO_V1(eventsourced_events_changed);

/*
 * Statement trigger: the events table changed outside append(); all cache
 * entries are stale, and the database's block of positions is given up.
 */
Datum
eventsourced_events_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("eventsourced.events_changed() must be called as a trigger")));
	es_seqcache_invalidate_all();
	es_seqcache_forget_own();
	es_position_forget();
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(eventsourced_seq_cache_stats);

/* seq_cache_stats(): this session's cache hits and misses */
Datum
eventsourced_seq_cache_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum((int64) stat_hits);
	values[1] = Int64GetDatum((int64) stat_misses);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
