/*
 * eventsourced.h
 *		Declarations shared by the eventsourced C sources.
 */
#ifndef EVENTSOURCED_H
#define EVENTSOURCED_H

#include "postgres.h"

/* Built and tested against PostgreSQL 15 only; the Makefile refuses others */
#if PG_VERSION_NUM < 150000 || PG_VERSION_NUM >= 160000
#error "eventsourced supports only PostgreSQL 15"
#endif

#include "fmgr.h"
#include "access/sdir.h"
#include "access/skey.h"
#include "executor/tuptable.h"
#include "utils/array.h"
#include "utils/relcache.h"
#include "utils/tuplestore.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* Limits on names, in bytes; they keep index entries well below btree's cap */
#define ES_MAX_TYPE_LEN		255
#define ES_MAX_ID_LEN		1024

/* Point lookups past a hinted last seq_no before a full scan is cheaper */
#define ES_MAX_HINT_STEPS	8

/* SQLSTATE of a failed optimistic concurrency check ("sequence conflict") */
#define ERRCODE_ES_SEQUENCE_CONFLICT	MAKE_SQLSTATE('S','C','0','0','1')

/* Advisory lock tag field4 values, so ours never collide with user locks */
#define ES_LOCK_ENTITY		0x4553
#define ES_LOCK_FEED		0x4546
#define ES_LOCK_PROJECTION	0x4550
#define ES_LOCK_POSITION	0x454F
#define ES_LOCK_FENCE_WAIT	0x4557

/* Attribute numbers of eventsourced.events */
#define Anum_es_events_entity_type	1
#define Anum_es_events_entity_id	2
#define Anum_es_events_seq_no		3
#define Anum_es_events_position		4
#define Anum_es_events_event_type	5
#define Anum_es_events_payload		6
#define Anum_es_events_metadata		7
#define Anum_es_events_event_id		8
#define Anum_es_events_recorded_at	9
#define Anum_es_events_payload_bytes	10
#define Natts_es_events				10

/* Attribute numbers of eventsourced.snapshots */
#define Anum_es_snapshots_entity_type	1
#define Anum_es_snapshots_entity_id		2
#define Anum_es_snapshots_seq_no		3
#define Anum_es_snapshots_state			4
#define Anum_es_snapshots_recorded_at	5
#define Anum_es_snapshots_state_bytes	6
#define Anum_es_snapshots_change		7	/* from 0.5.0 on */
#define Natts_es_snapshots				7
#define Natts_es_snapshots_v040			6	/* before 0.5.0: no change column */

/* Attribute numbers of eventsourced.entity_states */
#define Anum_es_entity_states_seq_no		3
#define Anum_es_entity_states_state			4
#define Anum_es_entity_states_generation	5
#define Natts_es_entity_states				5

/* Attribute numbers of eventsourced.snapshot_generations */
#define Anum_es_snapshot_generations_seq_no		3
#define Anum_es_snapshot_generations_generation	4
#define Natts_es_snapshot_generations			4

/* An entity: type name and id, both validated */
typedef struct EsEntity
{
	text	   *type;
	text	   *id;
} EsEntity;

/* One event to append */
typedef struct EsEvent
{
	text	   *event_type;
	Datum		payload;		/* jsonb, or bytea when binary */
	bool		binary;
	Datum		metadata;		/* jsonb, or 0 when NULL */
	bool		has_metadata;
	pg_uuid_t  *event_id;		/* NULL when absent */
} EsEvent;

/* OIDs of the extension's relations, looked up by name and cached */
typedef struct EsCatalog
{
	Oid			events;
	Oid			events_pkey;
	Oid			events_position_key;
	Oid			events_type_position_idx;	/* InvalidOid before 0.3.0 */
	Oid			events_event_id_key;
	bool		events_event_id_partial;	/* the index has a predicate */
	Oid			position_seq;
	Oid			snapshots;
	Oid			snapshots_pkey;
	Oid			snapshots_change_key;	/* InvalidOid before 0.5.0 */
	Oid			projection_state;
	Oid			projection_state_pkey;
	Oid			protobuf_descriptors;
	Oid			protobuf_descriptors_pkey;
	Oid			entity_types;
	Oid			entity_types_pkey;
	Oid			commands;
	Oid			commands_pkey;
	Oid			entity_states;
	Oid			entity_states_pkey;
	Oid			snapshot_generations;
	Oid			snapshot_generations_pkey;
	Oid			command_results;	/* InvalidOid before 0.4.0 */
	Oid			command_results_pkey;
	Oid			fences;			/* InvalidOid before 0.5.0 */
	Oid			fences_pkey;
} EsCatalog;

/* What one feed read asks for */
typedef struct EsFeedRequest
{
	text	   *entity_type;	/* NULL: every type */
	int64		after_position;
	int32		max_count;
} EsFeedRequest;

/* position.c */
extern void es_position_init(void);
extern void es_position_prepare(Oid seqid);
extern int64 es_position_next(Oid seqid);
extern int64 es_position_from_sequence(Oid seqid);
extern void es_position_forget(void);
extern void es_position_database_dropped(Oid dboid);

/* shmem.c: a subsystem's piece of shared memory */
typedef struct EsShmemPart
{
	const char *name;			/* also the name of its LWLock tranche */
	Size		(*size) (void);
	int			nlocks;
	void		(*attach) (void *ptr, bool found);
} EsShmemPart;

extern void es_shmem_register(const EsShmemPart *part);

/* seqcache.c */
extern void es_seqcache_init(void);
extern void es_seqcache_database_dropped(Oid dboid);
extern int64 es_locked_last_seq_no(const EsEntity *entity, int64 hint);
extern void es_locked_last_set(const EsEntity *entity, int64 last);

/* catalog.c */
extern void es_catalog_init(void);
extern bool es_events_subscribed(void);
extern bool es_snapshots_subscribed(void);
extern bool es_is_catalog_relation(Oid relid);
extern const EsCatalog *es_catalog(void);
extern const Oid es_events_types[Natts_es_events];
extern void es_check_tupdesc(TupleDesc desc, const char *name, int natts, const Oid *types);
extern void es_check_shape(Relation rel, int natts, const Oid *types);
extern void es_check_select(Oid relid);
extern void es_check_select_by(Oid relid, Oid role);
extern Oid	es_relation_owner(Oid relid);

/* validate.c */
extern EsEntity es_entity_arg(FunctionCallInfo fcinfo, int type_arg, int id_arg);
extern text *es_name_arg(FunctionCallInfo fcinfo, int argno, const char *what, int maxlen);
extern int64 es_expected_arg(FunctionCallInfo fcinfo, int argno);
extern void es_check_name(text *t, const char *what, int maxlen);
extern void es_check_payload(bool isnull);
extern char *es_quote_name(const char *s);
extern char *es_entity_cstring(const char *type, const char *id);
extern char *es_entity_string(const EsEntity *entity);

/* feed.c */
extern void es_feed_init(void);
extern int64 es_feed_draw_position(Oid seqoid, bool from_sequence);
/* What a feed scan reads, for its horizon (es_feed_snapshot) */
#define ES_FEED_EVENTS		0x01
#define ES_FEED_SNAPSHOTS	0x02
extern Snapshot es_feed_snapshot(int which, int64 *horizon);

/* read.c */
typedef void (*EsFeedEmit) (TupleTableSlot *slot, void *arg);
extern int32 es_feed_scan(const EsFeedRequest *req, EsFeedEmit emit, void *arg, int64 *resume);
extern void es_feed_args(FunctionCallInfo fcinfo, bool by_type, EsFeedRequest *req);
extern int64 es_feed_after_arg(FunctionCallInfo fcinfo, int argno, const char *name);
extern int32 es_feed_max_count_arg(FunctionCallInfo fcinfo, int argno);

/* notify.c */
extern bool es_notify_enabled;
extern void es_notify_init(void);
extern void es_notify_note(text *entity_type, int64 position);
extern void es_notify_register_worker(bool sends);
extern int	es_notify_flush(void);

/* projection.c */
extern void es_projection_init(void);
extern void es_projection_worker_setup(void);
extern bool es_projection_mark_failed(text *name, const char *message);
extern bool es_projection_refused(int sqlerrcode);
extern char *es_projection_fail_refused(text *name);
/* What a projection run did, for the worker */
typedef struct EsRunStatus
{
	bool		progressed;		/* the checkpoint moved */
	bool		checking;		/* an error now is the registration's (owner, EXECUTE, handler) */
	bool		checked;		/* the registration passed its checks */
} EsRunStatus;

extern int32 es_run_projection(text *name, int32 max_events, bool background,
								TimestampTz deadline, EsRunStatus *outcome);

/* protobuf.c */
extern void es_pb_require_utf8(const char *function);

/* protoreg.c */
extern void es_protoreg_init(void);

/* worker.c */
extern void es_worker_init(void);

/* dbwatch.c */
extern void es_dbwatch_init(void);
extern void es_worker_note_hard_stop(void);

/* scan.c */
extern bool es_fetch_latest(Relation heap, Relation index, ScanKey keys, int nkeys,
							ScanDirection dir, TupleTableSlot *slot);
extern int64 es_last_seq_no(Relation events, Relation pkey, const EsEntity *entity);
extern int64 es_last_seq_no_hinted(Relation events, Relation pkey, const EsEntity *entity,
								   int64 hint);
extern void es_entity_scankeys(ScanKey keys, const EsEntity *entity);
extern bool es_fetch_seq_no(Relation events, Relation pkey, const EsEntity *entity,
							StrategyNumber strategy, RegProcedure proc, int64 seq_no,
							TupleTableSlot *slot);

/* snapshot.c */
extern void es_save_command_snapshot(const EsEntity *entity, int64 seq_no, Datum state,
									 int64 generation);
extern bool es_load_snapshot(const EsEntity *entity, int64 *seq_no, Datum *state);
extern bool es_fetch_snapshot(const EsEntity *entity, int64 *seq_no, Datum *state,
							  bool *binary);
extern int	es_snapshots_natts(void);
extern bool es_fetch_snapshot_as_caller(const EsEntity *entity, int64 *seq_no, Datum *state,
										bool *binary);

/* statetext.c */
extern void es_check_state_text(Datum state);

/* write.c */
typedef struct EsTableWriter
{
	Relation	rel;
	struct EState *estate;
	struct ResultRelInfo *rri;
	Oid			skipped;		/* the index left closed, or InvalidOid */
} EsTableWriter;

extern void es_table_open(EsTableWriter *w, Oid relid, Oid skip);
extern Relation es_table_index_rel(EsTableWriter *w, Oid indexid);
extern TupleTableSlot *es_table_slot(EsTableWriter *w);
extern TupleTableSlot *es_table_entity_slot(EsTableWriter *w, const EsEntity *entity);
extern void es_table_insert(EsTableWriter *w, TupleTableSlot *slot);
extern void es_table_index(EsTableWriter *w, TupleTableSlot *slot);
extern void es_table_update(EsTableWriter *w, ItemPointer tid, TupleTableSlot *slot);
extern bool es_table_try_update(EsTableWriter *w, ItemPointer tid, TupleTableSlot *slot);
extern TupleTableSlot *es_table_find(EsTableWriter *w, Oid indexid, ScanKey keys, int nkeys);
extern void es_table_put(EsTableWriter *w, TupleTableSlot *old, TupleTableSlot *slot);
extern void es_table_delete(EsTableWriter *w, ItemPointer tid);
extern void es_table_close(EsTableWriter *w);

/* fence.c */
extern void es_fence_init(void);
extern int32 es_entity_hash(text *type, text *id);
extern void es_check_fence(const EsEntity *entity);

/* append.c */
extern void es_lock_entity(const EsEntity *entity);
extern void es_check_event_ids(const EsEvent *events, int nevents);
extern EsEvent *es_events_from_array(ArrayType *arr, int *nevents);
extern int64 es_append_locked(const EsEntity *entity, int64 expected,
							  const EsEvent *events, int nevents);
extern int64 es_append_events(const EsEntity *entity, int64 expected,
							  const EsEvent *events, int nevents);

/* registry.c */
#define ES_MAX_STATEMENT_ARGS	8

/* A statement on our tables, prepared once per backend */
typedef struct EsStatement
{
	const char *sql;
	int			nargs;
	Oid			argtypes[ES_MAX_STATEMENT_ARGS];
	struct _SPI_plan *plan;
} EsStatement;

/* Whom user code runs as, and with which search_path (sandbox.c) */
typedef struct EsRunAs
{
	Oid			owner;
	const char *search_path;
} EsRunAs;

/* A registered handler: the function, who registered it, and how it runs */
typedef struct EsHandler
{
	Oid			fn;
	Oid			registrant;		/* the registration's owner */
	Oid			handler_owner;	/* the function's owner when it was registered */
	EsRunAs		run_as;
} EsHandler;

/* A registered entity type, its handler resolved and checked */
typedef struct EsEntityType
{
	EsHandler	event_handler;
	Datum		initial_state;	/* jsonb */
	int32		snapshot_after; /* 0: no snapshots */
	int64		generation;
} EsEntityType;

extern uint64 es_exec_as_owner(Oid relid, EsStatement *stmt, Datum *values, const bool *nulls);
extern bool es_fetch_by_key(Oid heapid, Oid indexid, ScanKey keys, int nkeys, int natts,
							Datum *values, bool *nulls, ItemPointer tid);
extern void es_lookup_entity_type(text *type, EsEntityType *reg);
extern void es_lookup_command(text *type, text *command, EsHandler *h);
extern Oid	es_resolve_projection_handler(Datum signature);

/* regcache.c */
extern void es_cached_entity_type(text *type, EsEntityType *reg);
extern void es_cached_command(text *type, text *command, EsHandler *h);

/* sandbox.c */
extern void es_sandbox_run(const EsRunAs *ra, void (*body) (void *arg), void *arg);
extern char *es_registrant_search_path(void);
extern Oid	es_function_owner(Oid fn);
extern void es_check_execute(Oid fn, Oid role);
extern void es_check_handler_owner(Oid fn, const char *what);
extern void es_check_run_as(Oid fn, Oid registrant, Oid runner, Oid handler_owner);
extern void es_check_reads_all_events(Oid role);
extern bool es_may_manage(Oid owner, Oid relid);
extern void es_check_manage(Oid owner, Oid relid, const char *what);

/* decision.c */
/* What a command handler decided */
typedef struct EsDecision
{
	bool		accepted;
	EsEvent    *events;			/* validated; NULL when there are none */
	int			nevents;
	Datum		reply;			/* jsonb */
	bool		reply_isnull;
	Datum		rejection;		/* jsonb, when not accepted */
} EsDecision;

extern void es_read_decision(Datum result, bool isnull, Oid handler, EsDecision *d);
#define Natts_es_command_result		5
extern void es_command_result_values(const EsDecision *d, int64 seq_no, Datum state,
									 Datum *values, bool *nulls);
extern Datum es_command_result(FunctionCallInfo fcinfo, const Datum *values, const bool *nulls);

#endif							/* EVENTSOURCED_H */
