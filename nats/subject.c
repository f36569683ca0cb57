/*-------------------------------------------------------------------------
 *
 * subject.c
 *		Names as NATS subject tokens, and numbers in PostgreSQL's binary
 *		format.
 *
 * The escaping rule (docs/nats.md): every byte that is printable ASCII
 * (0x21 to 0x7e) other than '.', '*', '>' and '%' stands for itself; every
 * other byte (space, control characters, bytes >= 0x7f, and those four)
 * becomes '%' followed by two upper-case hex digits.  The rule is
 * reversible (replace each %XX by its byte) and never yields an empty
 * token: the store's names are never empty.
 *
 * KV bucket names allow only [A-Za-z0-9_-] and keys [-/_=.A-Za-z0-9] (a
 * dot separating subject tokens), so snapshots use two more rules of the
 * same shape: an entity type in a bucket name keeps [A-Za-z0-9-] and
 * escapes every other byte, '_' included, as _XX; an entity id as a key
 * keeps [A-Za-z0-9-_/] and escapes every other byte, '.' and '=' included,
 * as =XX.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

/* Whether a byte of a name may stand for itself in a subject token. */
bool
plain_byte(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '.' && c != '*' && c != '>' && c != '%';
}

/*
 * Escapes len bytes of a name into a new NUL-terminated string: bytes that
 * plain() accepts stand for themselves, every other byte becomes escape
 * and two upper-case hex digits.
 */
char *
escape_with(const char *value, int len, bool (*plain) (unsigned char), char escape)
{
	static const char hex[] = "0123456789ABCDEF";
	char	   *token = malloc(3 * (size_t) len + 1);
	char	   *out = token;

	if (token == NULL)
		return NULL;
	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) value[i];

		if (plain(c))
			*out++ = (char) c;
		else
		{
			*out++ = escape;
			*out++ = hex[c >> 4];
			*out++ = hex[c & 0xF];
		}
	}
	*out = '\0';
	return token;
}

/* Escapes len bytes of a name into a new NUL-terminated subject token. */
char *
escape_token(const char *value, int len)
{
	return escape_with(value, len, plain_byte, '%');
}

/* Whether a byte of an entity type stands for itself in a KV bucket name. */
static bool
bucket_plain_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		c == '-';
}

/* Whether a byte of an entity id stands for itself in a KV key. */
static bool
key_plain_byte(unsigned char c)
{
	return bucket_plain_byte(c) || c == '_' || c == '/';
}

/* An entity type as a KV bucket name's tail: [A-Za-z0-9-] plain, _XX otherwise. */
char *
escape_bucket(const char *value, int len)
{
	return escape_with(value, len, bucket_plain_byte, '_');
}

/* An entity id as a KV key: [A-Za-z0-9-_/] plain, =XX otherwise. */
char *
escape_key(const char *value, int len)
{
	return escape_with(value, len, key_plain_byte, '=');
}

/* The subject of an entity's events: <stream>.<escaped type>.<escaped id>. */
char *
entity_subject(const char *stream, const char *type, int type_len, const char *id, int id_len)
{
	char	   *t = escape_token(type, type_len);
	char	   *i = escape_token(id, id_len);
	size_t		size = strlen(stream) + strlen(t) + strlen(i) + 3;
	char	   *subject = malloc(size);

	snprintf(subject, size, "%s.%s.%s", stream, t, i);
	free(t);
	free(i);
	return subject;
}

/*
 * Whether a name given on the command line can be used as it is (stream,
 * prefix); no quote, since the stream's name goes into JSON requests.
 */
bool
valid_name_token(const char *name)
{
	if (name == NULL || name[0] == '\0')
		return false;
	for (const char *c = name; *c; c++)
		if (!plain_byte((unsigned char) *c) || *c == '/' || *c == '\\' || *c == '"')
			return false;
	return true;
}

/* Reads a big-endian 64-bit integer (PostgreSQL's binary int8). */
int64_t
read_int64(const char *bytes)
{
	uint64_t	v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | (unsigned char) bytes[i];
	return (int64_t) v;
}
