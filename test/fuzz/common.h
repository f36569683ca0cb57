/*
 * common.h
 *		Shared by the pbjson fuzz harnesses and the unit test: a counting
 *		allocator (with optional failure injection), a JSON validator and a
 *		corpus replay main() for builds without libFuzzer.
 *
 * Each harness includes this once; everything is static.
 */
#ifndef PBJSON_FUZZ_COMMON_H
#define PBJSON_FUZZ_COMMON_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pbjson.h"

/* Live allocations, to check that every path frees what it takes */
static long live_allocs;
/* Allocations left before alloc starts failing; negative: never fail */
static long allocs_until_failure = -1;

/* malloc with bookkeeping and failure injection */
static inline void *
count_alloc(void *ctx, size_t n)
{
	void	   *p;

	(void) ctx;
	if (allocs_until_failure == 0)
		return NULL;
	if (allocs_until_failure > 0)
		allocs_until_failure--;
	p = malloc(n);
	if (p != NULL)
		live_allocs++;
	return p;
}

/* free with bookkeeping */
static inline void
count_free(void *ctx, void *p)
{
	(void) ctx;
	if (p == NULL)
		return;
	live_allocs--;
	free(p);
}

static const PbAllocator counting_allocator = {count_alloc, count_free, NULL};

/* Stop the run loudly: libFuzzer and the replay driver both report it */
static inline void
fail(const char *what, const char *detail)
{
	fprintf(stderr, "FAILED: %s: %s\n", what, detail ? detail : "");
	abort();
}

static inline bool json_value(const char **p, const char *end, int depth);

/* Skip JSON whitespace (we never emit any, but accept it) */
static inline void
json_ws(const char **p, const char *end)
{
	while (*p < end && (**p == ' ' || **p == '\n' || **p == '\t' || **p == '\r'))
		(*p)++;
}

/* Validate a JSON string: escapes, no raw control characters */
static inline bool
json_string(const char **p, const char *end)
{
	const char *s = *p + 1;
	int			i;

	for (; s < end && *s != '"'; s++)
	{
		if ((unsigned char) *s < 0x20)
			return false;
		if (*s != '\\')
			continue;
		if (++s >= end)
			return false;
		if (*s == 'u')
		{
			for (i = 1; i <= 4; i++)
				if (s + i >= end || !strchr("0123456789abcdefABCDEF", s[i]) || s[i] == '\0')
					return false;
			s += 4;
		}
		else if (!strchr("\"\\/bfnrt", *s) || *s == '\0')
			return false;
	}
	if (s >= end)
		return false;
	*p = s + 1;
	return true;
}

/* Validate a JSON number per RFC 8259 */
static inline bool
json_number(const char **p, const char *end)
{
	const char *s = *p;
	const char *digits;

	if (s < end && *s == '-')
		s++;
	if (s < end && *s == '0')
		s++;
	else
	{
		for (digits = s; s < end && *s >= '0' && *s <= '9'; s++)
			continue;
		if (s == digits)
			return false;
	}
	if (s < end && *s == '.')
	{
		for (digits = ++s; s < end && *s >= '0' && *s <= '9'; s++)
			continue;
		if (s == digits)
			return false;
	}
	if (s < end && (*s == 'e' || *s == 'E'))
	{
		s++;
		if (s < end && (*s == '+' || *s == '-'))
			s++;
		for (digits = s; s < end && *s >= '0' && *s <= '9'; s++)
			continue;
		if (s == digits)
			return false;
	}
	*p = s;
	return true;
}

/* Validate a JSON object or array body */
static inline bool
json_container(const char **p, const char *end, int depth, char close)
{
	(*p)++;
	json_ws(p, end);
	if (*p < end && **p == close)
	{
		(*p)++;
		return true;
	}
	for (;;)
	{
		if (close == '}')
		{
			if (*p >= end || **p != '"' || !json_string(p, end))
				return false;
			json_ws(p, end);
			if (*p >= end || **p != ':')
				return false;
			(*p)++;
		}
		if (!json_value(p, end, depth + 1))
			return false;
		json_ws(p, end);
		if (*p < end && **p == ',')
		{
			(*p)++;
			json_ws(p, end);
			continue;
		}
		if (*p < end && **p == close)
		{
			(*p)++;
			return true;
		}
		return false;
	}
}

/* Validate one JSON value */
static inline bool
json_value(const char **p, const char *end, int depth)
{
	json_ws(p, end);
	if (*p >= end || depth > 1000)
		return false;
	switch (**p)
	{
		case '{':
			return json_container(p, end, depth, '}');
		case '[':
			return json_container(p, end, depth, ']');
		case '"':
			return json_string(p, end);
		case 't':
		case 'f':
		case 'n':
			{
				const char *w = **p == 't' ? "true" : **p == 'f' ? "false" : "null";
				size_t		n = strlen(w);

				if ((size_t) (end - *p) < n || memcmp(*p, w, n) != 0)
					return false;
				*p += n;
				return true;
			}
		default:
			return json_number(p, end);
	}
}

/* Whether p[0..len) is well-formed UTF-8 (no surrogates, <= U+10FFFF) */
static inline bool
utf8_ok(const unsigned char *p, size_t len)
{
	size_t		i = 0,
				n,
				k;
	uint32_t	cp;

	while (i < len)
	{
		if (p[i] < 0x80)
		{
			i++;
			continue;
		}
		n = p[i] >= 0xF0 ? 3 : p[i] >= 0xE0 ? 2 : p[i] >= 0xC0 ? 1 : 0;
		if (n == 0 || p[i] > 0xF4 || i + n >= len)
			return false;
		cp = p[i] & (0x3F >> n);
		for (k = 1; k <= n; k++)
		{
			if ((p[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
			(n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
			(cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += n + 1;
	}
	return true;
}

/* Whether buf holds exactly one valid JSON value, NUL-terminated */
static inline bool
json_valid(const PbBuf *buf)
{
	const char *p = buf->data;
	const char *end = buf->data + buf->len;

	if (buf->data == NULL || buf->data[buf->len] != '\0' ||
		strlen(buf->data) != buf->len ||
		!utf8_ok((const unsigned char *) buf->data, buf->len))
		return false;
	if (!json_value(&p, end, 0))
		return false;
	json_ws(&p, end);
	return p == end;
}

/* Read a whole file into a malloc'd buffer of exactly its size */
static inline uint8_t *
read_file(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	uint8_t    *buf;
	long		n;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
		fseek(f, 0, SEEK_SET) != 0)
	{
		if (f)
			fclose(f);
		return NULL;
	}
	buf = malloc(n ? (size_t) n : 1);
	if (buf == NULL || fread(buf, 1, (size_t) n, f) != (size_t) n)
	{
		free(buf);
		fclose(f);
		return NULL;
	}
	fclose(f);
	*len = (size_t) n;
	return buf;
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int			LLVMFuzzerInitialize(int *argc, char ***argv);

#ifndef FUZZING

/* Run one file through the target; -1 when it cannot be read */
static inline int
replay_file(const char *path)
{
	size_t		len = 0;
	uint8_t    *data = read_file(path, &len);

	if (data == NULL)
	{
		fprintf(stderr, "cannot read %s\n", path);
		return -1;
	}
	LLVMFuzzerTestOneInput(data, len);
	free(data);
	return 0;
}

/* Run every regular file of a directory (not recursive) */
static inline int
replay_dir(const char *dir, int *count)
{
	DIR		   *dp = opendir(dir);
	struct dirent *de;
	char		path[4096];
	struct stat st;
	int			rc = 0;

	if (dp == NULL)
		return -1;
	while ((de = readdir(dp)) != NULL)
	{
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		if (replay_file(path) < 0)
			rc = -1;
		else
			(*count)++;
	}
	closedir(dp);
	return rc;
}

/* Replay corpus files and directories given on the command line */
int
main(int argc, char **argv)
{
	struct stat st;
	int			count = 0,
				rc = 0,
				i;

	LLVMFuzzerInitialize(&argc, &argv);
	for (i = 1; i < argc; i++)
	{
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
			rc |= replay_dir(argv[i], &count);
		else if (replay_file(argv[i]) == 0)
			count++;
		else
			rc = -1;
	}
	printf("%s: replayed %d input(s)\n", argv[0], count);
	return rc == 0 ? 0 : 1;
}

#endif							/* FUZZING */

#endif							/* PBJSON_FUZZ_COMMON_H */
