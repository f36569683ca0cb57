/*
 * eventsourced.h
 *		Declarations shared by the eventsourced C sources.
 */
#ifndef EVENTSOURCED_H
#define EVENTSOURCED_H

#include "postgres.h"

#include "fmgr.h"
#include "access/sdir.h"
#include "access/skey.h"
#include "executor/tuptable.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"
#include "utils/uuid.h"

/* Limits on names, in bytes; they keep index entries well below btree's cap */
#define ES_MAX_TYPE_LEN		255
#define ES_MAX_ID_LEN		1024

/* SQLSTATE of a failed optimistic concurrency check ("sequence conflict") */
#define ERRCODE_ES_SEQUENCE_CONFLICT	MAKE_SQLSTATE('S','C','0','0','1')

/* Advisory lock tag field4 values, so ours never collide with user locks */
#define ES_LOCK_ENTITY		0x4553
#define ES_LOCK_FEED		0x4546

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
#define Natts_es_events				9

/* Attribute numbers of eventsourced.snapshots */
#define Anum_es_snapshots_entity_type	1
#define Anum_es_snapshots_entity_id		2
#define Anum_es_snapshots_seq_no		3
#define Anum_es_snapshots_state			4

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
	Datum		payload;		/* jsonb */
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
	Oid			events_event_id_key;
	Oid			position_seq;
	Oid			snapshots;
	Oid			snapshots_pkey;
} EsCatalog;

/* catalog.c */
extern void es_catalog_init(void);
extern const EsCatalog *es_catalog(void);
extern void es_check_select(Oid relid);

/* validate.c */
extern EsEntity es_entity_arg(FunctionCallInfo fcinfo, int type_arg, int id_arg);
extern text *es_name_arg(FunctionCallInfo fcinfo, int argno, const char *what, int maxlen);
extern int64 es_expected_arg(FunctionCallInfo fcinfo, int argno);
extern void es_check_name(text *t, const char *what, int maxlen);
extern void es_check_payload(bool isnull);
extern char *es_entity_string(const EsEntity *entity);

/* feed.c */
extern void es_feed_init(void);
extern int64 es_feed_draw_position(Oid seqoid);
extern Snapshot es_feed_snapshot(int64 *horizon);

/* scan.c */
extern bool es_fetch_latest(Relation heap, Relation index, ScanKey keys, int nkeys,
							ScanDirection dir, TupleTableSlot *slot);
extern int64 es_last_seq_no(Relation events, Relation pkey, const EsEntity *entity);
extern void es_entity_scankeys(ScanKey keys, const EsEntity *entity);

/* snapshot.c */
extern void es_save_snapshot(const EsEntity *entity, int64 seq_no, Datum state);
extern bool es_load_snapshot(const EsEntity *entity, int64 *seq_no, Datum *state);

/* append.c */
extern void es_lock_entity(const EsEntity *entity);
extern int64 es_append_events(const EsEntity *entity, int64 expected,
							  const EsEvent *events, int nevents);

#endif							/* EVENTSOURCED_H */
