/*-------------------------------------------------------------------------
 *
 * consumer.c
 *		An independent JetStream reader for the tests of eventsourced-nats:
 *		prints every message of a stream, one line each, so that a test
 *		can compare the stream with the store.  It shares no code with the
 *		relay.
 *
 * Usage: consumer NATS_URL STREAM
 *        consumer NATS_URL --request SUBJECT BODY [HEADER=VALUE ...]   (prints the reply)
 *        consumer NATS_URL --send SUBJECT REPLY_SUBJECT BODY   (a request, no wait)
 *        consumer NATS_URL --publish SUBJECT BODY KEY=VALUE...  (into JetStream)
 *        consumer NATS_URL --delete STREAM FROM TO   (deletes sequences FROM..TO)
 *        consumer NATS_URL --kv-create BUCKET MAX_VALUE_SIZE
 * Line: seq TAB subject TAB then the headers Nats-Msg-Id,
 * Eventsourced-Position, Eventsourced-Seq-No, Eventsourced-Event-Type,
 * Eventsourced-Event-Id, Eventsourced-Metadata ("-" when absent), TAB the
 * payload in hex.
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

static const char *const headers[] = {
	"Nats-Msg-Id", "Eventsourced-Position", "Eventsourced-Seq-No",
	"Eventsourced-Event-Type", "Eventsourced-Event-Id", "Eventsourced-Metadata"
};

/* Prints one message as a line. */
static void
print_message(uint64_t seq, natsMsg *msg)
{
	const unsigned char *data = (const unsigned char *) natsMsg_GetData(msg);
	int			len = natsMsg_GetDataLength(msg);

	printf("%" PRIu64 "\t%s", seq, natsMsg_GetSubject(msg));
	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++)
	{
		const char *value = NULL;

		if (natsMsgHeader_Get(msg, headers[i], &value) != NATS_OK)
			value = "-";
		printf("\t%s", value);
	}
	putchar('\t');
	for (int i = 0; i < len; i++)
		printf("%02x", data[i]);
	putchar('\n');
}

/* Sends one request (headers as NAME=VALUE) and prints its reply (10 s at most). */
static int
request(natsConnection *nc, const char *subject, const char *body, int nheaders, char **headers)
{
	natsMsg    *msg = NULL;
	natsMsg    *reply = NULL;
	natsStatus	s = natsMsg_Create(&msg, subject, NULL, body, (int) strlen(body));

	for (int i = 0; i < nheaders && s == NATS_OK; i++)
	{
		char	   *eq = strchr(headers[i], '=');

		if (eq == NULL)
			return 2;
		*eq = '\0';
		s = natsMsgHeader_Set(msg, headers[i], eq + 1);
	}
	if (s == NATS_OK)
		s = natsConnection_RequestMsg(&reply, nc, msg, 10000);
	natsMsg_Destroy(msg);

	if (s != NATS_OK)
	{
		fprintf(stderr, "consumer: request failed: %s\n", natsStatus_GetText(s));
		return 1;
	}
	printf("%.*s\n", natsMsg_GetDataLength(reply), natsMsg_GetData(reply));
	natsMsg_Destroy(reply);
	return 0;
}

/* Publishes one message with headers into JetStream and waits for its ack. */
static int
publish(natsConnection *nc, int argc, char **argv)
{
	jsCtx	   *js = NULL;
	natsMsg    *msg = NULL;
	jsPubAck   *pa = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s = natsConnection_JetStream(&js, nc, NULL);

	if (s == NATS_OK)
		s = natsMsg_Create(&msg, argv[0], NULL, argv[1], (int) strlen(argv[1]));
	for (int i = 2; i < argc && s == NATS_OK; i++)
	{
		char	   *eq = strchr(argv[i], '=');

		if (eq == NULL)
			return 2;
		*eq = '\0';
		s = natsMsgHeader_Set(msg, argv[i], eq + 1);
	}
	if (s == NATS_OK)
		s = js_PublishMsg(&pa, js, msg, NULL, &jerr);
	if (s != NATS_OK)
		fprintf(stderr, "consumer: publish failed: %s\n", natsStatus_GetText(s));
	jsPubAck_Destroy(pa);
	natsMsg_Destroy(msg);
	jsCtx_Destroy(js);
	return s == NATS_OK ? 0 : 1;
}

/* Deletes the stream's messages FROM..TO (a gap, as purges and limits leave). */
static int
delete_range(natsConnection *nc, const char *stream, uint64_t from, uint64_t to)
{
	jsCtx	   *js = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s = natsConnection_JetStream(&js, nc, NULL);

	for (uint64_t seq = from; s == NATS_OK && seq <= to; seq++)
		s = js_DeleteMsg(js, stream, seq, NULL, &jerr);
	if (s != NATS_OK)
		fprintf(stderr, "consumer: %s (%d)\n", natsStatus_GetText(s), (int) jerr);
	jsCtx_Destroy(js);
	return s == NATS_OK ? 0 : 1;
}

/* Creates a KV bucket whose values may take at most max_value bytes. */
static int
kv_create(natsConnection *nc, const char *bucket, int max_value)
{
	jsCtx	   *js = NULL;
	kvStore    *kv = NULL;
	kvConfig	cfg;
	natsStatus	s = natsConnection_JetStream(&js, nc, NULL);

	kvConfig_Init(&cfg);
	cfg.Bucket = bucket;
	cfg.MaxValueSize = max_value;
	if (s == NATS_OK)
		s = js_CreateKeyValue(&kv, js, &cfg);
	if (s != NATS_OK)
		fprintf(stderr, "consumer: %s\n", natsStatus_GetText(s));
	kvStore_Destroy(kv);
	jsCtx_Destroy(js);
	return s == NATS_OK ? 0 : 1;
}

int
main(int argc, char **argv)
{
	natsConnection *nc = NULL;
	jsCtx	   *js = NULL;
	jsStreamInfo *si = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s;

	if (argc >= 5 && strcmp(argv[2], "--request") == 0)
	{
		int			rc = 1;

		if (natsConnection_ConnectTo(&nc, argv[1]) == NATS_OK)
			rc = request(nc, argv[3], argv[4], argc - 5, argv + 5);
		natsConnection_Destroy(nc);
		return rc;
	}
	if (argc == 6 && strcmp(argv[2], "--send") == 0)
	{
		int			rc = 1;

		/* a request with a reply subject of the caller's choice, no wait */
		if (natsConnection_ConnectTo(&nc, argv[1]) == NATS_OK &&
			natsConnection_PublishRequestString(nc, argv[3], argv[4], argv[5]) == NATS_OK &&
			natsConnection_FlushTimeout(nc, 10000) == NATS_OK)
			rc = 0;
		natsConnection_Destroy(nc);
		return rc;
	}
	if (argc >= 5 && strcmp(argv[2], "--publish") == 0)
	{
		int			rc = 1;

		if (natsConnection_ConnectTo(&nc, argv[1]) == NATS_OK)
			rc = publish(nc, argc - 3, argv + 3);
		natsConnection_Destroy(nc);
		return rc;
	}
	if (argc == 6 && strcmp(argv[2], "--delete") == 0)
	{
		int			rc = 1;

		if (natsConnection_ConnectTo(&nc, argv[1]) == NATS_OK)
			rc = delete_range(nc, argv[3], strtoull(argv[4], NULL, 10), strtoull(argv[5], NULL, 10));
		natsConnection_Destroy(nc);
		return rc;
	}
	if (argc == 5 && strcmp(argv[2], "--kv-create") == 0)
	{
		int			rc = 1;

		if (natsConnection_ConnectTo(&nc, argv[1]) == NATS_OK)
			rc = kv_create(nc, argv[3], atoi(argv[4]));
		natsConnection_Destroy(nc);
		return rc;
	}
	if (argc != 3)
	{
		fprintf(stderr, "usage: consumer NATS_URL STREAM | NATS_URL --request SUBJECT BODY\n");
		return 2;
	}
	s = natsConnection_ConnectTo(&nc, argv[1]);
	if (s == NATS_OK)
		s = natsConnection_JetStream(&js, nc, NULL);
	if (s == NATS_OK)
		s = js_GetStreamInfo(&si, js, argv[2], NULL, &jerr);
	for (uint64_t seq = si ? si->State.FirstSeq : 1;
		 s == NATS_OK && si && seq <= si->State.LastSeq; seq++)
	{
		natsMsg    *msg = NULL;

		s = js_GetMsg(&msg, js, argv[2], seq, NULL, &jerr);
		if (s == NATS_NOT_FOUND)
		{
			printf("%" PRIu64 "\tdeleted\n", seq);
			s = NATS_OK;
			continue;
		}
		if (s == NATS_OK)
			print_message(seq, msg);
		natsMsg_Destroy(msg);
	}
	if (s != NATS_OK)
		fprintf(stderr, "consumer: %s\n", natsStatus_GetText(s));
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return s == NATS_OK ? 0 : 1;
}
