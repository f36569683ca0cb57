/*
 * registry.c
 *		Registration of entity types and command handlers, and their lookup.
 *
 * Registrations name their handlers by schema-qualified signature (text),
 * so a dump restores them by name and pg_upgrade accepts the tables.
 * The lookups here read the tables and resolve and check the handler
 * (kind, argument and result types, EXECUTE): a handler that was dropped
 * and re-created differently is refused instead of being called with the
 * wrong types.  handle_command() reaches them through regcache.c, which
 * keeps their results until a registration, function, schema or type
 * changes.  Resolved signatures are cached here too.  Writes to our tables
 * run as the table owner, so callers need only EXECUTE on the SQL
 * functions.
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/* Attribute numbers of eventsourced.entity_types */
#define Anum_es_entity_types_event_handler	2
#define Anum_es_entity_types_initial_state	4
#define Anum_es_entity_types_snapshot_after 5
#define Anum_es_entity_types_generation		6
#define Anum_es_entity_types_owner			7
#define Anum_es_entity_types_search_path	8
#define Anum_es_entity_types_handler_owner	9
#define Natts_es_entity_types				9

/* Attribute numbers of eventsourced.commands */
#define Anum_es_commands_handler	3
#define Anum_es_commands_owner		4
#define Anum_es_commands_search_path	5
#define Anum_es_commands_handler_owner	6
#define Natts_es_commands			6

/* Longest handler signature the backend caches (longer ones are resolved each time) */
#define ES_MAX_SIGNATURE_LEN	512

/* A resolved handler signature */
typedef struct EsSignatureEntry
{
	char		signature[ES_MAX_SIGNATURE_LEN];	/* hash key */
	Oid			fn;
} EsSignatureEntry;

static HTAB *signature_cache = NULL;
static bool signature_cache_valid = false;

/* What a handler must look like */
typedef struct EsSignature
{
	const char *what;			/* "event handler" */
	Oid			argtypes[3];
	Oid			rettype;		/* InvalidOid: eventsourced.decision */
	const char *rule;			/* the signature, as a sentence for messages */
} EsSignature;

static const EsSignature event_handler_sig = {
	"event handler", {JSONBOID, TEXTOID, JSONBOID}, JSONBOID,
	"An event handler is a function (state jsonb, event_type text, payload jsonb) RETURNS jsonb."
};

static const EsSignature command_handler_sig = {
	"command handler", {TEXTOID, JSONBOID, JSONBOID}, InvalidOid,
	"A command handler is a function (entity_id text, state jsonb, args jsonb) RETURNS eventsourced.decision."
};

static EsStatement upsert_entity_type = {
	"INSERT INTO eventsourced.entity_types AS t (entity_type, event_handler, "
	"event_handler_hash, initial_state, snapshot_after, generation, owner, search_path, "
	"handler_owner) VALUES ($1, $2, $3, $4, $5, "
	"pg_catalog.nextval('eventsourced.generation_seq'::pg_catalog.regclass), "
	"$6::pg_catalog.regrole, $7, $8::pg_catalog.regrole) "
	"ON CONFLICT (entity_type) DO UPDATE SET event_handler = excluded.event_handler, "
	"event_handler_hash = excluded.event_handler_hash, "
	"initial_state = excluded.initial_state, snapshot_after = excluded.snapshot_after, "
	"owner = excluded.owner, search_path = excluded.search_path, "
	"handler_owner = excluded.handler_owner, "
	"generation = CASE WHEN t.event_handler OPERATOR(pg_catalog.=) excluded.event_handler "
	"AND t.event_handler_hash OPERATOR(pg_catalog.=) excluded.event_handler_hash "
	"AND t.initial_state OPERATOR(pg_catalog.=) excluded.initial_state "
	"AND t.search_path OPERATOR(pg_catalog.=) excluded.search_path "
	"THEN t.generation ELSE excluded.generation END",
	8, {TEXTOID, TEXTOID, INT8OID, JSONBOID, INT4OID, OIDOID, TEXTOID, OIDOID}
};

static EsStatement upsert_command = {
	"INSERT INTO eventsourced.commands AS c (entity_type, command, handler, owner, search_path, "
	"handler_owner) VALUES ($1, $2, $3, $4::pg_catalog.regrole, $5, $6::pg_catalog.regrole) "
	"ON CONFLICT (entity_type, command) DO UPDATE SET handler = excluded.handler, "
	"owner = excluded.owner, search_path = excluded.search_path, "
	"handler_owner = excluded.handler_owner",
	6, {TEXTOID, TEXTOID, TEXTOID, OIDOID, TEXTOID, OIDOID}
};

/* Run one statement on our tables as the owner of relid; returns rows processed */
uint64
es_exec_as_owner(Oid relid, EsStatement *stmt, Datum *values, const bool *nulls)
{
	Oid			save_userid;
	int			save_sec;
	Oid			owner = es_relation_owner(relid);
	char		spi_nulls[ES_MAX_STATEMENT_ARGS];
	uint64		processed;

	for (int i = 0; i < stmt->nargs; i++)
		spi_nulls[i] = (nulls != NULL && nulls[i]) ? 'n' : ' ';

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (stmt->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(stmt->sql, stmt->nargs, stmt->argtypes);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		stmt->plan = plan;
	}
	if (SPI_execute_plan(stmt->plan, values, spi_nulls, false, 0) < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", stmt->sql);
	processed = SPI_processed;
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);
	return processed;
}

/*
 * Fetch the row of heap whose index entry matches the keys, as the active
 * snapshot sees it, into values/nulls, which have room for natts columns,
 * the table's shape (varlenas detoasted, in the current memory context);
 * false when there is none.
 */
bool
es_fetch_by_key(Oid heapid, Oid indexid, ScanKey keys, int nkeys, int natts,
				Datum *values, bool *nulls, ItemPointer tid)
{
	Relation	heap = table_open(heapid, AccessShareLock);
	Relation	index;
	TupleTableSlot *slot;
	TupleDesc	desc = RelationGetDescr(heap);
	IndexScanDesc scan;
	bool		found;

	es_check_shape(heap, natts, NULL);
	index = index_open(indexid, AccessShareLock);
	slot = table_slot_create(heap, NULL);
	scan = index_beginscan(heap, index, GetActiveSnapshot(), nkeys, 0);

	index_rescan(scan, keys, nkeys, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	if (found)
	{
		if (tid)
			*tid = slot->tts_tid;
		slot_getallattrs(slot);
		for (int i = 0; i < desc->natts; i++)
		{
			nulls[i] = slot->tts_isnull[i];
			values[i] = nulls[i] ? (Datum) 0 :
				datumCopy(slot->tts_values[i], TupleDescAttr(desc, i)->attbyval,
						  TupleDescAttr(desc, i)->attlen);
			if (!nulls[i] && TupleDescAttr(desc, i)->attlen == -1)
				values[i] = PointerGetDatum(pg_detoast_datum_packed((struct varlena *) DatumGetPointer(values[i])));
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	return found;
}

/* The OID of eventsourced.decision, the result type of command handlers */
static Oid
es_decision_type(void)
{
	Oid			nsp = get_namespace_oid("eventsourced", false);

	return GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
						   CStringGetDatum("decision"), ObjectIdGetDatum(nsp));
}

/* How a routine that is not a plain function is called in messages */
static const char *
es_prokind_name(char prokind)
{
	switch (prokind)
	{
		case PROKIND_PROCEDURE:
			return "a procedure";
		case PROKIND_AGGREGATE:
			return "an aggregate function";
		case PROKIND_WINDOW:
			return "a window function";
	}
	return "not a plain function";
}

/* "(text, jsonb)": a function's argument types, for messages */
static char *
es_argtypes_string(Form_pg_proc proc)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	for (int i = 0; i < proc->pronargs; i++)
		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "",
						 format_type_be(proc->proargtypes.values[i]));
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/* The argument types are exactly the ones the signature wants */
static bool
es_argtypes_match(Form_pg_proc proc, const EsSignature *sig)
{
	if (proc->pronargs != lengthof(sig->argtypes))
		return false;
	for (int i = 0; i < proc->pronargs; i++)
		if (proc->proargtypes.values[i] != sig->argtypes[i])
			return false;
	return true;
}

/* Refuse a function that cannot serve as the handler sig describes */
static void
es_check_form(Form_pg_proc proc, const char *name, const EsSignature *sig, Oid rettype)
{
	if (proc->prokind != PROKIND_FUNCTION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s %s is %s", sig->what, name, es_prokind_name(proc->prokind)),
				 errdetail("%s", sig->rule)));
	if (proc->proretset)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s %s returns a set", sig->what, name),
				 errdetail("%s", sig->rule)));
	if (!es_argtypes_match(proc, sig))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s %s has the wrong argument types", sig->what, name),
				 errdetail("It takes %s. %s", es_argtypes_string(proc), sig->rule)));
	if (proc->prorettype != rettype)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s %s returns %s", sig->what, name, format_type_be(proc->prorettype)),
				 errdetail("%s", sig->rule)));
}

/* 64-bit hash of a text column of pg_proc, chained onto seed */
static uint64
es_hash_proc_text(HeapTuple tup, AttrNumber attno, uint64 seed)
{
	bool		isnull;
	Datum		d = SysCacheGetAttr(PROCOID, tup, attno, &isnull);
	text	   *t;

	if (isnull)
		return seed;
	t = DatumGetTextPP(d);
	return hash_any_extended((unsigned char *) VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), seed);
}

/*
 * Check fn against the signature; when hash is given, set it to a hash of
 * the definition (body, library symbol or SQL body), so that a changed body
 * counts as a change.
 */
static void
es_check_handler(Oid fn, const EsSignature *sig, int64 *hash)
{
	Oid			rettype = OidIsValid(sig->rettype) ? sig->rettype : es_decision_type();
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("%s with OID %u does not exist", sig->what, fn)));
	es_check_form((Form_pg_proc) GETSTRUCT(tup), format_procedure(fn), sig, rettype);
	if (hash != NULL)
		*hash = (int64) es_hash_proc_text(tup, Anum_pg_proc_prosqlbody,
										  es_hash_proc_text(tup, Anum_pg_proc_probin,
															es_hash_proc_text(tup, Anum_pg_proc_prosrc, 0)));
	ReleaseSysCache(tup);
}

/* A handler argument: present and of the right form; sets its definition hash */
static Oid
es_handler_arg(FunctionCallInfo fcinfo, int argno, const EsSignature *sig, int64 *hash)
{
	Oid			fn;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", sig->what)));
	fn = PG_GETARG_OID(argno);
	es_check_handler(fn, sig, hash);
	return fn;
}

/* snapshot_after: NULL (never) or at least 1 */
static void
es_check_snapshot_after(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno) || PG_GETARG_INT32(argno) >= 1)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("snapshot_after must be at least 1"),
			 errdetail("snapshot_after was %d.", PG_GETARG_INT32(argno)),
			 errhint("Pass NULL to save no snapshots.")));
}

/* Resolve a signature to its function as the owner of our tables, or fail */
static Oid
es_resolve_signature(Datum signature, const EsSignature *sig)
{
	LOCAL_FCINFO(lookup, 1);
	Oid			save_userid;
	int			save_sec;
	Datum		fn;

	InitFunctionCallInfoData(*lookup, NULL, 1, InvalidOid, NULL, NULL);
	lookup->args[0].value = signature;
	lookup->args[0].isnull = false;
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(es_relation_owner(es_catalog()->entity_types),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	fn = to_regprocedure(lookup);
	SetUserIdAndSecContext(save_userid, save_sec);
	if (lookup->isnull)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("%s %s does not exist", sig->what, TextDatumGetCString(signature)),
				 errhint("Create the function again, or register another %s.", sig->what)));
	return DatumGetObjectId(fn);
}

/* Forget every resolved signature when a function, schema or type changes */
static void
es_signature_cache_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	signature_cache_valid = false;
}

/*
 * The backend's cache of resolved signatures, (re)built empty when it was
 * invalidated.  Resolving a signature parses its type names, which costs
 * more than the rest of a registration lookup.
 */
static HTAB *
es_signature_cache(void)
{
	HASHCTL		ctl;

	if (signature_cache != NULL && signature_cache_valid)
		return signature_cache;
	if (signature_cache == NULL)
	{
		CacheRegisterSyscacheCallback(PROCOID, es_signature_cache_invalidate, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, es_signature_cache_invalidate, (Datum) 0);
		CacheRegisterSyscacheCallback(TYPEOID, es_signature_cache_invalidate, (Datum) 0);
	}
	else
		hash_destroy(signature_cache);
	ctl.keysize = ES_MAX_SIGNATURE_LEN;
	ctl.entrysize = sizeof(EsSignatureEntry);
	signature_cache = hash_create("eventsourced handler signatures", 16, &ctl,
								  HASH_ELEM | HASH_STRINGS);
	signature_cache_valid = true;
	return signature_cache;
}

/*
 * The function a stored signature names, cached per backend.  The lookup
 * runs as the owner of our tables, so callers need no USAGE on the
 * handler's schema: the registration already named the function.
 */
static Oid
es_lookup_signature(Datum signature, const EsSignature *sig)
{
	char	   *str = TextDatumGetCString(signature);
	bool		cacheable = strlen(str) < ES_MAX_SIGNATURE_LEN;
	EsSignatureEntry *entry;
	Oid			fn;

	if (cacheable &&
		(entry = hash_search(es_signature_cache(), str, HASH_FIND, NULL)) != NULL)
		return entry->fn;
	fn = es_resolve_signature(signature, sig);
	if (cacheable)
	{
		entry = hash_search(es_signature_cache(), str, HASH_ENTER, NULL);
		entry->fn = fn;
	}
	return fn;
}

/* A stored handler signature resolved and checked again: same form as at registration */
static Oid
es_resolve_handler(Datum signature, const EsSignature *sig)
{
	Oid			fn = es_lookup_signature(signature, sig);

	es_check_handler(fn, sig, NULL);
	return fn;
}

/* A stored projection handler signature resolved to its function (form checked by the caller) */
Oid
es_resolve_projection_handler(Datum signature)
{
	static const EsSignature projection_handler_sig = {"projection handler", {0}, InvalidOid, ""};

	return es_lookup_signature(signature, &projection_handler_sig);
}

/* An entity type that nobody registered */
static void
es_report_unregistered(text *type)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("entity type %s is not registered", es_quote_name(text_to_cstring(type))),
			 errhint("Register it with eventsourced.register_entity().")));
}

/*
 * A registered handler from its row: the function, its registrant, whom it
 * runs as, whom it ran as when registered, and with which search_path.
 * The columns follow the handler's: owner, search_path, handler_owner.
 */
static void
es_handler_from_row(const Datum *values, int fn_attno, int owner_attno, int path_attno,
					int handler_owner_attno, const EsSignature *sig, EsHandler *h)
{
	h->fn = es_resolve_handler(values[fn_attno - 1], sig);
	h->registrant = DatumGetObjectId(values[owner_attno - 1]);
	h->handler_owner = DatumGetObjectId(values[handler_owner_attno - 1]);
	h->run_as.owner = es_function_owner(h->fn);
	h->run_as.search_path = TextDatumGetCString(values[path_attno - 1]);
}

/* The registration of an entity type, as the active snapshot sees it; false if none */
static bool
es_fetch_entity_type(text *type, Datum *values, bool *nulls)
{
	const EsCatalog *cat = es_catalog();
	ScanKeyData key;

	ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   C_COLLATION_OID, F_TEXTEQ, PointerGetDatum(type));
	return es_fetch_by_key(cat->entity_types, cat->entity_types_pkey, &key, 1,
						   Natts_es_entity_types, values, nulls, NULL);
}

/* The registration of an entity type, as the active snapshot sees it */
void
es_lookup_entity_type(text *type, EsEntityType *reg)
{
	Datum		values[Natts_es_entity_types];
	bool		nulls[Natts_es_entity_types];

	if (!es_fetch_entity_type(type, values, nulls))
		es_report_unregistered(type);
	es_handler_from_row(values, Anum_es_entity_types_event_handler,
						Anum_es_entity_types_owner, Anum_es_entity_types_search_path,
						Anum_es_entity_types_handler_owner, &event_handler_sig,
						&reg->event_handler);
	reg->initial_state = values[Anum_es_entity_types_initial_state - 1];
	reg->snapshot_after = nulls[Anum_es_entity_types_snapshot_after - 1] ? 0 :
		DatumGetInt32(values[Anum_es_entity_types_snapshot_after - 1]);
	reg->generation = DatumGetInt64(values[Anum_es_entity_types_generation - 1]);
}

/* The row of command (type, command) as the active snapshot sees it; false if none */
static bool
es_fetch_command(text *type, text *command, Datum *values, bool *nulls)
{
	const EsCatalog *cat = es_catalog();
	ScanKeyData keys[2];

	ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   C_COLLATION_OID, F_TEXTEQ, PointerGetDatum(type));
	ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
						   C_COLLATION_OID, F_TEXTEQ, PointerGetDatum(command));
	return es_fetch_by_key(cat->commands, cat->commands_pkey, keys, 2, Natts_es_commands,
						   values, nulls, NULL);
}

/* The command handler registered for (type, command) */
void
es_lookup_command(text *type, text *command, EsHandler *h)
{
	Datum		values[Natts_es_commands];
	bool		nulls[Natts_es_commands];

	if (!es_fetch_command(type, command, values, nulls))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("entity type %s has no command %s",
						es_quote_name(text_to_cstring(type)), es_quote_name(text_to_cstring(command))),
				 errhint("Register it with eventsourced.register_command().")));
	es_handler_from_row(values, Anum_es_commands_handler, Anum_es_commands_owner,
						Anum_es_commands_search_path, Anum_es_commands_handler_owner,
						&command_handler_sig, h);
}

/*
 * Serialize registrations in relid and read with a snapshot taken after
 * the lock, so the owner checked is the one the upsert replaces.
 */
static void
es_lock_registrations(Oid relid)
{
	LockRelationOid(relid, ShareRowExclusiveLock);
	PushActiveSnapshot(GetLatestSnapshot());
}

/*
 * What registering a handler takes: owning its function, and (since an
 * entity type's handlers see all its events) that both the registrant and
 * the function's owner may read every event.  Returns the function's owner.
 */
static Oid
es_check_registrant(Oid handler, const char *what)
{
	Oid			owner = es_function_owner(handler);

	es_check_handler_owner(handler, what);
	es_check_reads_all_events(GetUserId());
	es_check_reads_all_events(owner);
	return owner;
}

/*
 * The current user may change an entity type's registration (see
 * es_check_manage); false when the type is not registered.
 */
static bool
es_check_entity_type_manage(text *type)
{
	Datum		values[Natts_es_entity_types];
	bool		nulls[Natts_es_entity_types];

	if (!es_fetch_entity_type(type, values, nulls))
		return false;
	es_check_manage(DatumGetObjectId(values[Anum_es_entity_types_owner - 1]),
					es_catalog()->entity_types,
					psprintf("entity type %s", es_quote_name(text_to_cstring(type))));
	return true;
}

PG_FUNCTION_INFO_V1(eventsourced_register_entity);

/* register_entity(entity_type, event_handler, initial_state, snapshot_after) */
Datum
eventsourced_register_entity(PG_FUNCTION_ARGS)
{
	const EsCatalog *cat = es_catalog();
	text	   *type = es_name_arg(fcinfo, 0, "entity_type", ES_MAX_TYPE_LEN);
	int64		hash;
	Oid			handler = es_handler_arg(fcinfo, 1, &event_handler_sig, &hash);
	Oid			handler_owner;
	Datum		values[8];
	bool		nulls[8] = {false, false, false, false, PG_ARGISNULL(3), false, false, false};

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("initial_state must not be null"),
				 errhint("Use 'null'::jsonb for an entity that starts without state.")));
	es_check_snapshot_after(fcinfo, 3);
	PreventCommandIfReadOnly("eventsourced.register_entity()");
	handler_owner = es_check_registrant(handler, "an event handler");
	es_lock_registrations(cat->entity_types);
	(void) es_check_entity_type_manage(type);
	PopActiveSnapshot();
	values[0] = PointerGetDatum(type);
	values[1] = CStringGetTextDatum(format_procedure_qualified(handler));
	values[2] = Int64GetDatum(hash);
	values[3] = PG_GETARG_DATUM(2);
	values[4] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	values[5] = ObjectIdGetDatum(GetUserId());
	values[6] = CStringGetTextDatum(es_registrant_search_path());
	values[7] = ObjectIdGetDatum(handler_owner);
	(void) es_exec_as_owner(cat->entity_types, &upsert_entity_type, values, nulls);
	PG_RETURN_VOID();
}

/*
 * Adding or replacing a command takes the right to manage the entity type
 * and, when the command exists, the command.
 */
static void
es_check_command_manage(text *type, text *command)
{
	Datum		values[Natts_es_commands];
	bool		nulls[Natts_es_commands];

	if (!es_check_entity_type_manage(type))
		es_report_unregistered(type);
	if (es_fetch_command(type, command, values, nulls))
		es_check_manage(DatumGetObjectId(values[Anum_es_commands_owner - 1]),
						es_catalog()->entity_types,
						psprintf("command %s of entity type %s",
								 es_quote_name(text_to_cstring(command)),
								 es_quote_name(text_to_cstring(type))));
}

PG_FUNCTION_INFO_V1(eventsourced_register_command);

/* register_command(entity_type, command, handler) */
Datum
eventsourced_register_command(PG_FUNCTION_ARGS)
{
	const EsCatalog *cat = es_catalog();
	text	   *type = es_name_arg(fcinfo, 0, "entity_type", ES_MAX_TYPE_LEN);
	text	   *command = es_name_arg(fcinfo, 1, "command", ES_MAX_TYPE_LEN);
	int64		hash;
	Oid			handler = es_handler_arg(fcinfo, 2, &command_handler_sig, &hash);
	Oid			handler_owner;
	Datum		values[6];

	PreventCommandIfReadOnly("eventsourced.register_command()");
	handler_owner = es_check_registrant(handler, "a command handler");
	LockRelationOid(cat->entity_types, ShareLock);
	es_lock_registrations(cat->commands);
	es_check_command_manage(type, command);
	PopActiveSnapshot();
	values[0] = PointerGetDatum(type);
	values[1] = PointerGetDatum(command);
	values[2] = CStringGetTextDatum(format_procedure_qualified(handler));
	values[3] = ObjectIdGetDatum(GetUserId());
	values[4] = CStringGetTextDatum(es_registrant_search_path());
	values[5] = ObjectIdGetDatum(handler_owner);
	(void) es_exec_as_owner(cat->commands, &upsert_command, values, NULL);
	PG_RETURN_VOID();
}
