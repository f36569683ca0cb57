# PGXS build for the eventsourced extension.
EXTENSION = eventsourced
MODULE_big = eventsourced
OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))
DATA = $(wildcard sql/$(EXTENSION)--*.sql)

# pg_regress tests: every sql/*.sql that is not an extension script.
TESTS = $(sort $(filter-out sql/$(EXTENSION)--%,$(wildcard sql/*.sql)))
REGRESS = $(patsubst sql/%.sql,%,$(TESTS))
REGRESS_OPTS = --load-extension=$(EXTENSION)

# Isolation specs live in test/specs, their expected output in test/expected.
# The feed_fallback spec needs a server without shared_preload_libraries;
# test/run runs it on such a server.
ISOLATION = $(sort $(filter-out feed_fallback,$(patsubst test/specs/%.spec,%,$(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test --load-extension=$(EXTENSION)

PG_CPPFLAGS = -Isrc
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers -Werror
SHLIB_LINK =

EXTRA_CLEAN = results regression.diffs regression.out output_iso test/results

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Every object depends on the shared header.
$(OBJS): $(wildcard src/*.h)
