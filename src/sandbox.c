/*
 * sandbox.c
 *		How user code (event, command and projection handlers) runs: as the
 *		owner of the handler function, as a security-restricted operation,
 *		in a GUC nest level of its own, with the search_path its registrant
 *		had at registration time (pg_temp last).
 *
 * This is what PostgreSQL does for index expressions and maintenance
 * commands: a handler cannot create temporary objects, prepared statements,
 * cursors WITH HOLD, LISTEN, or SET ROLE, and every GUC it changes is rolled
 * back when it returns, so nothing it does outlives the call in the
 * session.  The caller's search_path and temporary schema cannot steer what
 * its unqualified names resolve to.  Running as the function's owner means
 * code runs with the rights of the role that can change it, never more:
 * registering requires owning the function (see es_check_handler_owner).
 *
 * On an error the (sub)transaction abort restores the user id, security
 * context and GUC nest level; the caller seen by eventsourced.caller() is
 * restored by es_sandbox_run itself.
 */
#include "eventsourced.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rls.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

/* The role that called the innermost handler running, or InvalidOid */
static Oid	current_caller = InvalidOid;

/* What the sandbox saved, to be put back afterwards */
typedef struct EsSandboxSave
{
	Oid			userid;
	int			sec_context;
	int			nestlevel;
	Oid			caller;
} EsSandboxSave;

/* "role \"name\"" for messages, or a description of a dropped role */
static char *
es_role_name(Oid role)
{
	char	   *name = GetUserNameFromId(role, true);

	return name ? psprintf("role \"%s\"", name) : pstrdup("a role that no longer exists");
}

/* Switch to the handler's owner, restricted, with its own search_path */
static void
es_sandbox_enter(const EsRunAs *ra, EsSandboxSave *save)
{
	GetUserIdAndSecContext(&save->userid, &save->sec_context);
	save->caller = current_caller;
	SetUserIdAndSecContext(ra->owner, save->sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save->nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", ra->search_path, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	current_caller = save->userid;
}

/* Undo es_sandbox_enter after a call that returned normally */
static void
es_sandbox_leave(const EsSandboxSave *save)
{
	AtEOXact_GUC(false, save->nestlevel);
	SetUserIdAndSecContext(save->userid, save->sec_context);
}

/*
 * Run body(arg) in the sandbox of ra.  Several handler calls (a batch of
 * events) may run in one entry.
 */
void
es_sandbox_run(const EsRunAs *ra, void (*body) (void *arg), void *arg)
{
	EsSandboxSave save;

	es_sandbox_enter(ra, &save);
	PG_TRY();
	{
		body(arg);
	}
	PG_FINALLY();
	{
		current_caller = save.caller;
	}
	PG_END_TRY();
	es_sandbox_leave(&save);
}

/*
 * The search_path handlers registered now will run with: the current one,
 * as written (so "$user" is the handler's owner), without any temporary
 * schema, then pg_temp last.
 */
char *
es_registrant_search_path(void)
{
	List	   *names;
	ListCell   *lc;
	StringInfoData buf;

	initStringInfo(&buf);
	if (!SplitIdentifierString(pstrdup(namespace_search_path), ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in search_path")));
	foreach(lc, names)
	{
		const char *name = lfirst(lc);

		if (strcmp(name, "pg_temp") == 0 || strncmp(name, "pg_temp_", 8) == 0 ||
			strncmp(name, "pg_toast_temp_", 14) == 0)
			continue;
		appendStringInfo(&buf, "%s, ", quote_identifier(name));
	}
	appendStringInfoString(&buf, "pg_temp");
	return buf.data;
}

/* The role a handler function runs as: its owner */
Oid
es_function_owner(Oid fn)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);
	return owner;
}

/* A role must hold EXECUTE on a handler to call it or to have it run */
void
es_check_execute(Oid fn, Oid role)
{
	AclResult	acl = pg_proc_aclcheck(fn, role, ACL_EXECUTE);

	if (acl == ACLCHECK_OK)
		return;
	if (role == GetUserId())
		aclcheck_error(acl, OBJECT_FUNCTION, get_func_name(fn));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s that owns handler %s may not execute it",
					es_role_name(role), format_procedure(fn)),
			 errhint("GRANT EXECUTE on the function to its owner.")));
}

/*
 * Registering a handler takes owning it (or being a member of its owner,
 * or a superuser): handlers run as their owner, so nobody can make code
 * run with rights its author does not have.  Functions in temporary
 * schemas are refused: another session could later create one of the same
 * name there.
 */
void
es_check_handler_owner(Oid fn, const char *what)
{
	if (isAnyTempNamespace(get_func_namespace(fn)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s is in a temporary schema and cannot be registered as %s",
						format_procedure(fn), what),
				 errhint("Create the handler in a permanent schema.")));
	if (pg_proc_ownercheck(fn, GetUserId()))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("must be owner of function %s to register it as %s",
					format_procedure(fn), what),
			 errdetail("Handlers run with the rights of the function's owner."),
			 errhint("Create the handler as this role, or register it as the function's owner.")));
}

/*
 * At every use: a handler runs as its function's owner, which must still be
 * the role that owned it at registration (handler_owner), and a role whose
 * rights its registrant has.  A function whose owner changed (ALTER
 * FUNCTION OWNER, REASSIGN OWNED), that was dropped and created again by
 * another role, or whose registrant was dropped, is refused until it is
 * registered again.
 */
void
es_check_run_as(Oid fn, Oid registrant, Oid runner, Oid handler_owner)
{
	if (runner != handler_owner)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("handler %s belongs to %s, not to %s as when it was registered",
						format_procedure(fn), es_role_name(runner), es_role_name(handler_owner)),
				 errdetail("Handlers run as their function's owner; a function that changed hands, or was created again by another role, is not run."),
				 errhint("Register the handler again.")));
	if (has_privs_of_role(registrant, runner))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("handler %s is owned by %s, whose rights its registrant, %s, does not have",
					format_procedure(fn), es_role_name(runner), es_role_name(registrant)),
			 errdetail("Handlers run as their function's owner, never with more rights than the role that registered them."),
			 errhint("Register the handler again, as its function's owner.")));
}

/*
 * An entity type's handlers see every event of its entities (the fold is
 * not filtered by row-level security), so whoever registers one must be
 * able to read every event: SELECT on the events, and no policy applying.
 */
void
es_check_reads_all_events(Oid role)
{
	Oid			events = es_catalog()->events;

	es_check_select_by(events, role);
	if (check_enable_rls(events, role, true) != RLS_ENABLED)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("row-level security restricts %s on eventsourced.events", es_role_name(role)),
			 errdetail("Command and event handlers see every event of their entities, whatever the policies."),
			 errhint("Register entity types and commands as a role that policies do not restrict.")));
}

/*
 * Whether the current user may replace or drop an object registered by
 * owner: a member of owner, or of the extension's owner (the owner of
 * relid, one of its tables), or a superuser.
 */
bool
es_may_manage(Oid owner, Oid relid)
{
	Oid			me = GetUserId();

	return has_privs_of_role(me, owner) || has_privs_of_role(me, es_relation_owner(relid));
}

/* Refuse to replace, reset or drop what another role registered */
void
es_check_manage(Oid owner, Oid relid, const char *what)
{
	const char *name;

	if (es_may_manage(owner, relid))
		return;
	name = GetUserNameFromId(owner, true);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s belongs to another role", what),
			 name ? errdetail("It was registered by role \"%s\".", name) :
			 errdetail("It was registered by a role that no longer exists."),
			 errhint("Only its owner, a member of its owner, the extension's owner or a superuser may manage it.")));
}

PG_FUNCTION_INFO_V1(eventsourced_caller);

/* caller(): inside a handler, the role that called handle_command or run_projection */
Datum
eventsourced_caller(PG_FUNCTION_ARGS)
{
	Oid			role = OidIsValid(current_caller) ? current_caller : GetUserId();
	char	   *name = GetUserNameFromId(role, true);

	if (name == NULL)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(DirectFunctionCall1(namein, CStringGetDatum(name)));
}
