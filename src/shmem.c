/*
 * shmem.c
 *		One place that asks for and attaches the shared memory of every
 *		subsystem (feed horizon, positions, notification hand-off, seq_no
 *		cache).
 *
 * Subsystems register a part from their init function while the library is
 * being preloaded.  The request hook reserves each part's size and LWLocks;
 * the startup hook creates or attaches each part under AddinShmemInitLock
 * and hands it to the part's init function with "found" telling whether it
 * already existed.
 */
#include "eventsourced.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#define ES_SHMEM_MAX_PARTS	8

static const EsShmemPart *parts[ES_SHMEM_MAX_PARTS];
static int	nparts = 0;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Reserve every part's memory and locks */
static void
es_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	for (int i = 0; i < nparts; i++)
	{
		RequestAddinShmemSpace(parts[i]->size());
		if (parts[i]->nlocks > 0)
			RequestNamedLWLockTranche(parts[i]->name, parts[i]->nlocks);
	}
}

/* Create or attach every part */
static void
es_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	for (int i = 0; i < nparts; i++)
	{
		bool		found;
		void	   *ptr = ShmemInitStruct(parts[i]->name, parts[i]->size(), &found);

		parts[i]->attach(ptr, found);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Add a part; the hooks are installed with the first one */
void
es_shmem_register(const EsShmemPart *part)
{
	Assert(process_shared_preload_libraries_in_progress);
	if (nparts == ES_SHMEM_MAX_PARTS)
		elog(ERROR, "eventsourced: too many shared memory parts");
	parts[nparts++] = part;
	if (nparts > 1)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = es_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = es_shmem_startup;
}
