/*-------------------------------------------------------------------------
 *
 * options.c
 *		The command line of eventsourced-nats.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay.h"

/* Tells how to call the program. */
static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: " PROGRAM_NAME " --source CONNSTR [options]\n"
			"Publishes every event of the eventsourced feed to NATS JetStream,\n"
			"exactly once and in feed order.\n\n"
			"  --source CONNSTR       the event store (libpq connection string)\n"
			"  --nats URL             NATS server(s), comma-separated (default %s)\n"
			"  --stream NAME          JetStream stream, subjects NAME.> (default %s)\n"
			"  --name NAME            checkpoint name; one relay per name (default %s)\n"
			"  --types T1,T2          only these entity types (default all)\n"
			"  --commands             serve commands over NATS request/reply\n"
			"  --commands-prefix P    command subjects P.<type>.<id>.<command> (default %s)\n"
			"  --commands-source C    connection for commands (default --source)\n"
			"  --command-workers N    concurrent command connections (default %d)\n"
			"  --snapshots            mirror snapshots to NATS KV buckets snapshots_<type>\n"
			"  --max-buckets N        create no bucket beyond N snapshots_* buckets (default %d)\n"
			"  --creds FILE           NATS user credentials file (JWT and NKey seed)\n"
			"  --nkey PUBLIC_KEY      NATS user NKey (with --nkey-seed)\n"
			"  --nkey-seed FILE       the file holding that NKey's seed\n"
			"  --tls                  require TLS\n"
			"  --tls-ca FILE          CA certificates to verify the server with (implies --tls)\n"
			"  --tls-cert FILE        client certificate chain (with --tls-key)\n"
			"  --tls-key FILE         client private key\n"
			"  --batch N              events per page (default %d)\n"
			"  --poll-ms N            poll interval without notifications (default %d)\n"
			"  --ack-wait-ms N        how long to wait for JetStream's acks (default %d)\n"
			"  --exit-when-idle       exit once the feed has nothing more\n"
			"  -v, --verbose          print what it does\n",
			DEFAULT_NATS_URL, DEFAULT_STREAM, DEFAULT_NAME, DEFAULT_COMMANDS_PREFIX,
			DEFAULT_COMMAND_WORKERS, DEFAULT_MAX_BUCKETS, DEFAULT_BATCH, DEFAULT_POLL_MS,
			DEFAULT_ACK_WAIT_MS);
}

/* Reports a bad command line and exits; message may be NULL. */
static void
bad_usage(const char *message)
{
	if (message)
		fprintf(stderr, PROGRAM_NAME ": %s\n", message);
	usage(stderr);
	exit(EXIT_USAGE);
}

/* Parses a numeric option, refusing junk and out-of-range values. */
static bool
parse_number(const char *option, const char *text, long min, long max,
			 long *value)
{
	char	   *end;

	errno = 0;
	*value = strtol(text, &end, 10);
	if (errno == 0 && end != text && *end == '\0' &&
		*value >= min && *value <= max)
		return true;
	fprintf(stderr, PROGRAM_NAME ": --%s must be an integer from %ld to %ld, not \"%s\"\n",
			option, min, max, text);
	return false;
}

/* Orders type names bytewise, as the store compares them. */
static int
compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * Splits --types into a sorted list without duplicates, and renders it as
 * a text[] literal (each element quoted) to pass as a query parameter.
 */
static void
split_types(Options *opt)
{
	char	   *copy = strdup(opt->types_text);
	char	   *literal;
	size_t		size = 3;
	int			n = 0;

	opt->types = calloc(MAX_TYPES, sizeof(char *));
	for (char *save = NULL, *t = strtok_r(copy, ",", &save); t;
		 t = strtok_r(NULL, ",", &save))
	{
		if (n == MAX_TYPES)
			bad_usage("--types names too many types");
		opt->types[n++] = t;
		size += 2 * strlen(t) + 3;
	}
	if (n == 0)
		bad_usage("--types must name at least one entity type");
	qsort(opt->types, n, sizeof(char *), compare_names);
	opt->ntypes = 0;
	for (int i = 0; i < n; i++)
		if (opt->ntypes == 0 || strcmp(opt->types[opt->ntypes - 1], opt->types[i]) != 0)
			opt->types[opt->ntypes++] = opt->types[i];
	literal = malloc(size);
	size = 0;
	literal[size++] = '{';
	for (int i = 0; i < opt->ntypes; i++)
	{
		if (i > 0)
			literal[size++] = ',';
		literal[size++] = '"';
		for (const char *c = opt->types[i]; *c; c++)
		{
			if (*c == '"' || *c == '\\')
				literal[size++] = '\\';
			literal[size++] = *c;
		}
		literal[size++] = '"';
	}
	literal[size++] = '}';
	literal[size] = '\0';
	opt->types_array = literal;
}

/* Applies one command-line option; false if it is invalid. */
static bool
apply_option(Options *opt, int code, const char *arg)
{
	switch (code)
	{
		case 's': opt->source = arg; return true;
		case 'N': opt->nats_url = arg; return true;
		case 'S': opt->stream = arg; return true;
		case 'n': opt->name = arg; return true;
		case 'T': opt->types_text = arg; return true;
		case 'c': opt->commands = true; return true;
		case 'P': opt->commands_prefix = arg; return true;
		case 'D': opt->commands_source = arg; return true;
		case 'W':
			return parse_number("command-workers", arg, 1, MAX_COMMAND_WORKERS,
								&opt->command_workers);
		case 'k': opt->snapshots = true; return true;
		case 'M':
			return parse_number("max-buckets", arg, 0, MAX_MAX_BUCKETS, &opt->max_buckets);
		case 'C': opt->creds = arg; return true;
		case 'K': opt->nkey_seed = arg; return true;
		case 'u': opt->nkey = arg; return true;
		case 't': opt->tls = true; return true;
		case 'A': opt->tls_ca = arg; opt->tls = true; return true;
		case 'E': opt->tls_cert = arg; return true;
		case 'Y': opt->tls_key = arg; return true;
		case 'b': return parse_number("batch", arg, 1, MAX_BATCH, &opt->batch);
		case 'p': return parse_number("poll-ms", arg, 1, MAX_POLL_MS, &opt->poll_ms);
		case 'a':
			return parse_number("ack-wait-ms", arg, 100, MAX_ACK_WAIT_MS,
								&opt->ack_wait_ms);
		case 'x': opt->exit_when_idle = true; return true;
		case 'v': opt->verbose = true; return true;
		case 'h':
			usage(stdout);
			exit(EXIT_SUCCESS);
	}
	return false;
}

/*
 * Refuses a file option naming a file that cannot be read (named in the
 * message): libnats would only say "Invalid Argument" at every retry.
 */
static void
check_file(const char *option, const char *path)
{
	if (path != NULL && access(path, R_OK) != 0)
	{
		fprintf(stderr, PROGRAM_NAME ": cannot read %s file \"%s\": %s\n", option, path,
				strerror(errno));
		exit(EXIT_USAGE);
	}
}

/* Refuses names that cannot be a stream name or a subject prefix. */
static void
check_names(const Options *opt)
{
	if (!valid_name_token(opt->stream) || strlen(opt->stream) > MAX_STREAM_NAME)
		bad_usage("--stream must be 1 to 255 printable ASCII characters other than . * > / \\ % \"");
	if (!valid_name_token(opt->commands_prefix) ||
		strlen(opt->commands_prefix) > MAX_STREAM_NAME)
		bad_usage("--commands-prefix must be 1 to 255 printable ASCII characters other than . * > / \\ %");
	if (strcmp(opt->commands_prefix, opt->stream) == 0)
		bad_usage("--commands-prefix must differ from --stream, or the stream would store the requests");
	if (opt->name[0] == '\0')
		bad_usage("--name must not be empty");
	if ((opt->tls_cert == NULL) != (opt->tls_key == NULL))
		bad_usage("--tls-cert and --tls-key go together");
	if ((opt->nkey == NULL) != (opt->nkey_seed == NULL))
		bad_usage("--nkey and --nkey-seed go together");
	if (opt->nkey && opt->creds)
		bad_usage("--creds and --nkey exclude each other");
	check_file("--nkey-seed", opt->nkey_seed);
	check_file("--creds", opt->creds);
	check_file("--tls-ca", opt->tls_ca);
	check_file("--tls-cert", opt->tls_cert);
	check_file("--tls-key", opt->tls_key);
}

/* Whether the relay follows an entity type (--types, sorted; none: all). */
bool
follows_type(const Options *opt, const char *type)
{
	int			lo = 0,
				hi = opt->ntypes - 1;

	if (opt->types == NULL)
		return true;
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		int			cmp = strcmp(type, opt->types[mid]);

		if (cmp == 0)
			return true;
		if (cmp < 0)
			hi = mid - 1;
		else
			lo = mid + 1;
	}
	return false;
}

/* Fills the options from the command line; exits on a usage error. */
void
parse_options(int argc, char **argv, Options *opt)
{
	static const struct option long_options[] = {
		{"source", required_argument, NULL, 's'},
		{"nats", required_argument, NULL, 'N'},
		{"stream", required_argument, NULL, 'S'},
		{"name", required_argument, NULL, 'n'},
		{"types", required_argument, NULL, 'T'},
		{"commands", no_argument, NULL, 'c'},
		{"commands-prefix", required_argument, NULL, 'P'},
		{"commands-source", required_argument, NULL, 'D'},
		{"command-workers", required_argument, NULL, 'W'},
		{"snapshots", no_argument, NULL, 'k'},
		{"max-buckets", required_argument, NULL, 'M'},
		{"creds", required_argument, NULL, 'C'},
		{"nkey-seed", required_argument, NULL, 'K'},
		{"nkey", required_argument, NULL, 'u'},
		{"tls", no_argument, NULL, 't'},
		{"tls-ca", required_argument, NULL, 'A'},
		{"tls-cert", required_argument, NULL, 'E'},
		{"tls-key", required_argument, NULL, 'Y'},
		{"batch", required_argument, NULL, 'b'},
		{"poll-ms", required_argument, NULL, 'p'},
		{"ack-wait-ms", required_argument, NULL, 'a'},
		{"exit-when-idle", no_argument, NULL, 'x'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			code;

	opt->nats_url = DEFAULT_NATS_URL;
	opt->stream = DEFAULT_STREAM;
	opt->name = DEFAULT_NAME;
	opt->commands_prefix = DEFAULT_COMMANDS_PREFIX;
	opt->command_workers = DEFAULT_COMMAND_WORKERS;
	opt->batch = DEFAULT_BATCH;
	opt->max_buckets = DEFAULT_MAX_BUCKETS;
	opt->poll_ms = DEFAULT_POLL_MS;
	opt->ack_wait_ms = DEFAULT_ACK_WAIT_MS;
	while ((code = getopt_long(argc, argv, "vh", long_options, NULL)) != -1)
	{
		if (!apply_option(opt, code, optarg))
			bad_usage(NULL);
	}
	if (optind < argc || opt->source == NULL)
		bad_usage("--source is required, and nothing else but options");
	check_names(opt);
	if (opt->commands_source == NULL)
		opt->commands_source = opt->source;
	if (opt->types_text)
		split_types(opt);
}
