/*
 * dbwatch.c
 *		What a backend (library preloaded) sees happen to databases and to
 *		the extension, told to those who care once it commits: the shared
 *		caches forget a dropped database; the launcher (launcher.c) starts a
 *		database's workers when the extension is created there, stops them
 *		when it is dropped, and looks again at a database created or altered.
 *		Before a statement that needs a database to itself (DROP DATABASE,
 *		CREATE DATABASE ... TEMPLATE, ALTER DATABASE ... RENAME or SET
 *		TABLESPACE), its workers are made to leave, so that it does not need
 *		FORCE.
 *
 * The object access hook sees every creation and drop of an extension
 * (CREATE EXTENSION, CASCADE, DROP SCHEMA ... CASCADE) and of a database;
 * whether our extension exists is decided just before commit, so a
 * subtransaction rolled back changes nothing.
 */
#include "launcher.h"

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/memutils.h"

static object_access_hook_type prev_object_access_hook = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

/* What this transaction did */
static Oid	dropped_database = InvalidOid;
static List *touched_databases = NIL;	/* created or altered (TopMemoryContext) */
static List *left_databases = NIL;	/* marked left (TopMemoryContext) */
static bool extension_created = false;	/* some extension */
static bool extension_dropped = false;	/* ours */
static Oid	dropped_extension = InvalidOid; /* ours, as it was dropped */
static bool stop_workers = false;	/* decided just before commit */
static bool start_workers = false;

/* Remember an OID in a list that lives until the transaction ends */
static List *
es_dbwatch_remember(List *list, Oid oid)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	list = lappend_oid(list, oid);
	MemoryContextSwitchTo(old);
	return list;
}

/* Note creations, alterations and drops of databases and extensions */
static void
es_object_access(ObjectAccessType access, Oid classId, Oid objectId,
				 int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (classId == DatabaseRelationId)
	{
		if (access == OAT_DROP)
			dropped_database = objectId;
		else if (access == OAT_POST_CREATE || access == OAT_POST_ALTER)
			touched_databases = es_dbwatch_remember(touched_databases, objectId);
	}
	else if (classId == ExtensionRelationId)
	{
		if (access == OAT_POST_CREATE)
			extension_created = true;
		else if (access == OAT_DROP &&
				 objectId == get_extension_oid("eventsourced", true))
		{
			extension_dropped = true;
			dropped_extension = objectId;
		}
	}
}

/*
 * A statement needs a database (by name) to itself: make its workers
 * leave, if the user may run the statement on it at all (no role can kick
 * another's workers out with a statement that then fails its permission
 * check).
 */
static void
es_dbwatch_leave(const char *name, bool creates)
{
	Oid			dboid = get_database_oid(name, true);

	if (!OidIsValid(dboid) || !pg_database_ownercheck(dboid, GetUserId()))
		return;
	if (creates && !superuser() && !have_createdb_privilege())
		return;
	if (es_launcher_mark_leaving(dboid))
		left_databases = es_dbwatch_remember(left_databases, dboid);
}

/* The value of a statement's option, or NULL */
static const char *
es_dbwatch_option(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *d = lfirst(lc);

		if (strcmp(d->defname, name) == 0 && d->arg != NULL)
			return defGetString(d);
	}
	return NULL;
}

/* The database a utility statement needs to itself, if any */
static void
es_dbwatch_statement(Node *stmt)
{
	const char *template;

	switch (nodeTag(stmt))
	{
		case T_DropdbStmt:
			es_dbwatch_leave(((DropdbStmt *) stmt)->dbname, false);
			break;
		case T_CreatedbStmt:
			template = es_dbwatch_option(((CreatedbStmt *) stmt)->options, "template");
			es_dbwatch_leave(template ? template : "template1", true);
			break;
		case T_RenameStmt:
			if (((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
				es_dbwatch_leave(((RenameStmt *) stmt)->subname, false);
			break;
		case T_AlterDatabaseStmt:
			if (es_dbwatch_option(((AlterDatabaseStmt *) stmt)->options, "tablespace"))
				es_dbwatch_leave(((AlterDatabaseStmt *) stmt)->dbname, false);
			break;
		default:
			break;
	}
}

/* Utility hook: the workers leave before a statement that needs their database */
static void
es_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				   ProcessUtilityContext context, ParamListInfo params,
				   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	es_dbwatch_statement(pstmt->utilityStmt);
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

/* Just before commit: what became of our extension here */
static void
es_dbwatch_pre_commit(void)
{
	Oid			current;
	bool		exists;

	if (!extension_created && !extension_dropped)
		return;
	current = get_extension_oid("eventsourced", true);
	exists = OidIsValid(current);
	/* the same extension still there: its drop was rolled back to a savepoint */
	if (extension_dropped && current == dropped_extension && !extension_created)
		return;
	stop_workers = extension_dropped;	/* dropped, maybe created again */
	start_workers = exists;
}

/* After commit: tell the caches and the launcher */
static void
es_dbwatch_committed(void)
{
	ListCell   *lc;

	if (OidIsValid(dropped_database))
	{
		es_position_database_dropped(dropped_database);
		es_seqcache_database_dropped(dropped_database);
	}
	if (stop_workers)
		es_launcher_request(ES_LAUNCH_STOP, MyDatabaseId);
	if (start_workers)
		es_launcher_request(ES_LAUNCH_START, MyDatabaseId);
	foreach(lc, touched_databases)
		es_launcher_request(ES_LAUNCH_RECHECK, lfirst_oid(lc));
}

/* At the end of a transaction: the marks go (with a look again), the notes too */
static void
es_dbwatch_ended(void)
{
	ListCell   *lc;

	foreach(lc, left_databases)
	{
		es_launcher_unmark_leaving(lfirst_oid(lc));
		es_launcher_request(ES_LAUNCH_RECHECK, lfirst_oid(lc));
	}
	list_free(left_databases);
	list_free(touched_databases);
	left_databases = touched_databases = NIL;
	dropped_database = InvalidOid;
	extension_created = extension_dropped = false;
	dropped_extension = InvalidOid;
	stop_workers = start_workers = false;
}

/* Transaction callback */
static void
es_dbwatch_xact(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			es_dbwatch_pre_commit();
			break;
		case XACT_EVENT_COMMIT:
			es_dbwatch_committed();
			es_dbwatch_ended();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			es_dbwatch_ended();
			break;
		default:
			break;
	}
}

/* Install the hooks (library preloaded only: the launcher exists only then) */
void
es_dbwatch_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_object_access_hook = object_access_hook;
	object_access_hook = es_object_access;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = es_process_utility;
	RegisterXactCallback(es_dbwatch_xact, NULL);
}
