/*
 * protoreg.c
 *		Registered protobuf descriptor sets, and protobuf_to_jsonb(): binary
 *		payloads decoded to jsonb with protobuf's JSON mapping, so SQL (and
 *		SQL projections) can read binary events.
 *
 * The sets live in eventsourced.protobuf_descriptors.  Each backend keeps
 * the decoded schema of all of them in a memory context of its own, built
 * on first use and dropped when the table's relcache entry is invalidated;
 * register_protobuf() sends that invalidation, so every backend sees a new
 * set from its next transaction on.  The decoding itself is pbjson.c.
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "pbjson.h"

#define ES_PB_ERRLEN	256
/* Decoding needs up to ~100x a descriptor set's size, ~12x a payload's */
#define ES_PB_MAX_DESCRIPTOR_SET	(4 * 1024 * 1024)
#define ES_PB_MAX_PAYLOAD			(64 * 1024 * 1024)

/* Refuse inputs whose decoding would need too much memory */
static void
es_pb_check_size(bytea *b, size_t limit, const char *what)
{
	if (VARSIZE_ANY_EXHDR(b) > limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s of %zu bytes is too large", what, (size_t) VARSIZE_ANY_EXHDR(b)),
				 errdetail("The limit is %zu bytes.", limit)));
}

static MemoryContext schema_cxt = NULL;
static PbSchema *schema = NULL;
static Oid	schema_relid = InvalidOid;

static EsStatement insert_descriptor_set = {
	"INSERT INTO eventsourced.protobuf_descriptors (descriptor_set, message_types) "
	"VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING",
	2, {BYTEAOID, TEXTARRAYOID}
};

/* pbjson allocations in the memory context given as ctx */
static void *
es_pbjson_alloc(void *ctx, size_t n)
{
	if (n == 0 || !AllocSizeIsValid(n))
		return NULL;
	return MemoryContextAllocExtended((MemoryContext) ctx, n, MCXT_ALLOC_NO_OOM);
}

/* Counterpart of es_pbjson_alloc */
static void
es_pbjson_free(void *ctx, void *p)
{
	if (p)
		pfree(p);
}

/* Drop the cached schema when the descriptor table changes */
static void
es_schema_invalidate(Datum arg, Oid relid)
{
	if (schema_cxt == NULL || (OidIsValid(relid) && relid != schema_relid))
		return;
	MemoryContextDelete(schema_cxt);
	schema_cxt = NULL;
	schema = NULL;
}

/* Register the invalidation callback */
void
es_protoreg_init(void)
{
	CacheRegisterRelcacheCallback(es_schema_invalidate, (Datum) 0);
}

/* Add one serialized descriptor set to *target; errors are reported */
static void
es_schema_add(PbSchema **target, bytea *set, const PbAllocator *a)
{
	char		err[ES_PB_ERRLEN];

	if (pb_schema_add(target, (const uint8 *) VARDATA_ANY(set), VARSIZE_ANY_EXHDR(set),
					  a, err, sizeof(err)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid protobuf descriptor set"),
				 errdetail("%s", err),
				 errhint("Pass the output of protoc --include_imports --descriptor_set_out, "
						 "or register the sets it depends on first.")));
}

/* Feed every registered set, in registration order, to schema_add */
static void
es_schema_load_all(PbSchema **target, const PbAllocator *a)
{
	const EsCatalog *cat = es_catalog();
	Relation	rel = table_open(cat->protobuf_descriptors, AccessShareLock);
	Relation	index = index_open(cat->protobuf_descriptors_pkey, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	IndexScanDesc scan = index_beginscan(rel, index, GetActiveSnapshot(), 0, 0);

	index_rescan(scan, NULL, 0, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		set = slot_getattr(slot, 2, &isnull);

		es_schema_add(target, DatumGetByteaPP(set), a);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);
}

/* The schema of all registered sets, decoded once per backend */
static PbSchema *
es_schema(void)
{
	PbAllocator a;
	MemoryContext cxt;

	if (schema_cxt != NULL)
		return schema;
	cxt = AllocSetContextCreate(TopMemoryContext, "eventsourced protobuf schema",
								ALLOCSET_DEFAULT_SIZES);
	a.alloc = es_pbjson_alloc;
	a.free = es_pbjson_free;
	a.ctx = cxt;
	PG_TRY();
	{
		/*
		 * The cache outlives this transaction: read the sets as of now (the
		 * table lock taken first processed pending invalidations), not with
		 * an older REPEATABLE READ snapshot.
		 */
		schema = NULL;
		LockRelationOid(es_catalog()->protobuf_descriptors, AccessShareLock);
		PushActiveSnapshot(GetLatestSnapshot());
		es_schema_load_all(&schema, &a);
		PopActiveSnapshot();
	}
	PG_CATCH();
	{
		MemoryContextDelete(cxt);
		schema = NULL;
		PG_RE_THROW();
	}
	PG_END_TRY();
	schema_cxt = cxt;
	schema_relid = es_catalog()->protobuf_descriptors;
	return schema;
}

/* A one-text-column result set for a SETOF text function */
static Tuplestorestate *
es_text_srf(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	rsinfo->setDesc = CreateTemplateTupleDesc(1);
	TupleDescInitEntry(rsinfo->setDesc, 1, "message_type", TEXTOID, -1, 0);
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	MemoryContextSwitchTo(old);
	return rsinfo->setResult;
}

/*
 * Message type names are shared by every role of the database, and the
 * first definition of a name wins: registering is the extension owner's
 * act (a member of that role, or a superuser), whatever EXECUTE grants say.
 */
static void
es_check_protobuf_registrar(void)
{
	Oid			owner = es_relation_owner(es_catalog()->protobuf_descriptors);

	if (has_privs_of_role(GetUserId(), owner))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to register a protobuf descriptor set"),
			 errdetail("Registered message types are shared by every role of the database."),
			 errhint("Ask a member of role \"%s\", the extension's owner, to register it.",
					 GetUserNameFromId(owner, false))));
}

PG_FUNCTION_INFO_V1(eventsourced_register_protobuf);

/*
 * register_protobuf(descriptor_set bytea): store a FileDescriptorSet after
 * checking that it decodes (together with the sets registered before);
 * returns the message types it adds.  Registering a set again does nothing.
 */
Datum
eventsourced_register_protobuf(PG_FUNCTION_ARGS)
{
	PbAllocator a = {es_pbjson_alloc, es_pbjson_free, CurrentMemoryContext};
	Tuplestorestate *store;
	PbSchema   *prior = NULL;
	PbSchema   *combined = NULL;
	bytea	   *set;
	size_t		n;
	int			nnew = 0;
	Datum	   *names;
	Datum		values[2];

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("descriptor_set must not be null")));
	PreventCommandIfReadOnly("eventsourced.register_protobuf()");
	es_check_protobuf_registrar();
	set = PG_GETARG_BYTEA_PP(0);
	es_pb_check_size(set, ES_PB_MAX_DESCRIPTOR_SET, "descriptor set");
	store = es_text_srf(fcinfo);

	es_schema_load_all(&prior, &a);
	es_schema_load_all(&combined, &a);
	es_schema_add(&combined, set, &a);
	n = pb_schema_message_count(combined);
	names = palloc(sizeof(Datum) * Max(n, 1));
	for (size_t i = 0; i < n; i++)
	{
		const char *name = pb_schema_message_name(combined, i);
		bool		isnull = false;

		if (prior != NULL && pb_schema_has_message(prior, name))
			continue;
		names[nnew] = CStringGetTextDatum(name);
		tuplestore_putvalues(store, ((ReturnSetInfo *) fcinfo->resultinfo)->setDesc,
							 &names[nnew], &isnull);
		nnew++;
	}
	values[0] = PointerGetDatum(set);
	values[1] = PointerGetDatum(construct_array(names, nnew, TEXTOID, -1, false, TYPALIGN_INT));
	(void) es_exec_as_owner(es_catalog()->protobuf_descriptors, &insert_descriptor_set,
							values, NULL);
	CacheInvalidateRelcacheByRelid(es_catalog()->protobuf_descriptors);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(eventsourced_protobuf_to_jsonb);

/* protobuf_to_jsonb(payload bytea, message_type text) */
Datum
eventsourced_protobuf_to_jsonb(PG_FUNCTION_ARGS)
{
	bytea	   *payload = PG_GETARG_BYTEA_PP(0);
	char	   *type = text_to_cstring(PG_GETARG_TEXT_PP(1));
	PbSchema   *s = es_schema();
	PbAllocator a = {es_pbjson_alloc, es_pbjson_free, CurrentMemoryContext};
	PbBuf		out;
	char		err[ES_PB_ERRLEN];

	es_pb_require_utf8("protobuf_to_jsonb");
	if (s == NULL || !pb_schema_has_message(s, type))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("protobuf message type \"%s\" is not registered", type),
				 errhint("Register its descriptor set with eventsourced.register_protobuf().")));
	es_pb_check_size(payload, ES_PB_MAX_PAYLOAD, "protobuf payload");
	pb_buf_init(&out, &a);
	if (pb_to_json(s, type, (const uint8 *) VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload),
				   &out, err, sizeof(err)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("payload is not a valid %s message", type),
				 errdetail("%s", err)));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data ? out.data : "{}")));
}
