#!/usr/bin/env bash
# Throwaway PostgreSQL clusters for tests, benchmarks and the examples.
# Source this file, then: es_cluster_start DIR PORT [extra postgresql.conf lines]
# and es_cluster_stop DIR.  Servers run as the invoking user, or as
# "postgres" when invoked as root (PostgreSQL refuses to run as root), on a
# private socket directory with no TCP listener.

# The server's binaries.  On a machine without PostgreSQL yet, pg_config
# appears only once es_install_packages has run; it sets ES_PGBIN then.
ES_PGBIN=${ES_PGBIN:-$(pg_config --bindir 2>/dev/null || true)}
export ES_PGBIN

# Run a command as the cluster's owner (from /, which it may enter; every
# path passed is absolute).
es_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# Install the Debian packages the project needs, when any is missing.
es_install_packages() {
    local need=() p
    for p in postgresql-15 postgresql-server-dev-15 postgresql-contrib libpq-dev \
             libprotobuf-dev protobuf-compiler xxd \
             libprotobuf-c-dev protobuf-c-compiler make gcc perl \
             postgresql-15-plproxy; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo=sudo
        echo "== installing packages (apt-get): ${need[*]}"
        $sudo apt-get update -qq || return 1
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null || return 1
    fi
    es_find_pgbin
}

# Set ES_PGBIN from pg_config, or fail with a clear message.
es_find_pgbin() {
    [ -n "$ES_PGBIN" ] && [ -x "$ES_PGBIN/initdb" ] && return 0
    ES_PGBIN=$(pg_config --bindir 2>/dev/null) && [ -x "$ES_PGBIN/initdb" ] && export ES_PGBIN && return 0
    echo "PostgreSQL's server binaries were not found (pg_config --bindir: '$ES_PGBIN')" >&2
    return 1
}

# A private copy of the server tree under DIR (made once), so that a build
# can be installed and run without touching the system's installation
# (PostgreSQL 15 has no extension_control_path, and $libdir ignores
# dynamic_library_path): sets ES_DESTDIR and points ES_PGBIN into it.
es_private_tree() {
    local dir=$1 bindir pkglibdir sharedir
    bindir=$(pg_config --bindir) && pkglibdir=$(pg_config --pkglibdir) &&
        sharedir=$(pg_config --sharedir) || return 1
    if [ ! -x "$dir$bindir/initdb" ]; then
        mkdir -p "$dir$(dirname "$pkglibdir")" "$dir$(dirname "$sharedir")" || return 1
        cp -a "$(dirname "$pkglibdir")/." "$dir$(dirname "$pkglibdir")/" &&
            cp -a "$sharedir/." "$dir$sharedir/" || return 1
        chmod 755 "$dir"
    fi
    # A tree copied before PL/Proxy was installed lacks it (test/shell/scale.sh
    # needs it): copy its files too.
    if [ -e "$sharedir/extension/plproxy.control" ] && [ ! -e "$dir$sharedir/extension/plproxy.control" ]; then
        cp -a "$sharedir"/extension/plproxy[-.]* "$dir$sharedir/extension/" &&
            cp -a "$pkglibdir/plproxy.so" "$dir$pkglibdir/" || return 1
    fi
    ES_DESTDIR=$dir
    ES_PGBIN=$dir$bindir
    export ES_DESTDIR ES_PGBIN
}

# Build and install the extension: into ES_DESTDIR when set (see
# es_private_tree), else into the system's PostgreSQL.
es_build_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || [ -n "${ES_DESTDIR:-}" ] || sudo=sudo
    make -s -C "$1" >/dev/null || return 1
    $sudo make -s -C "$1" install ${ES_DESTDIR:+DESTDIR="$ES_DESTDIR"} >/dev/null
}

# Create and start a cluster in DIR on PORT; extra arguments are config
# lines.  UTF8 and the C.UTF-8 locale (always there on Debian), whatever the
# caller's locale is; fails with the server's log when it does not start.
es_cluster_start() {
    local dir=$1 port=$2
    shift 2
    es_find_pgbin || return 1
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    es_as_owner "$ES_PGBIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync \
        -E UTF8 --locale=C.UTF-8 >/dev/null || { echo "initdb failed in $dir" >&2; return 1; }
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir'"
        echo "port = $port"
        echo "fsync = off"
        echo "max_connections = 50"
        echo "max_prepared_transactions = 2"
        for line in "$@"; do echo "$line"; done
    } | es_as_owner tee -a "$dir/data/postgresql.conf" >/dev/null || return 1
    if ! es_as_owner "$ES_PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null; then
        echo "the server in $dir did not start; its log:" >&2
        tail -20 "$dir/server.log" >&2
        return 1
    fi
}

# Stop the cluster in DIR (quietly, if it is running).
es_cluster_stop() {
    es_as_owner "$ES_PGBIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}
