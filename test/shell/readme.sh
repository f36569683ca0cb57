#!/usr/bin/env bash
# checks: 9 (test/run fails when a different number of checks ran)
# The manual's examples are tests.  Every ```sql block of README.md and then
# of docs/*.md (in the order README's last section gives, then any other
# file of docs/ by name) runs, statement by statement, in one psql session
# against a fresh database, as a newcomer pasting them from top to bottom
# would run them.  Conventions in the blocks (other fences, e.g. ```text,
# are not run):
#   stmt; -- result: VALUE      what psql prints for it, tuples only, unaligned
#   -- result:                  (on the lines after a statement) what psql
#   --  col | col               prints, aligned; the row-count footer is left
#   -- -----+-----              out; cells are compared trimmed
#   -- error: SQLSTATE          the statement fails with this SQLSTATE; the
#   -- ERROR:  message          ERROR/DETAIL/HINT lines that follow, if any,
#                               are compared too
# "<...>" in a shown result matches anything (positions, timestamps, pids).
# Any error that is not announced fails.  Asynchronous notifications are
# left out of the comparison.  The database is the one the background
# worker serves (es_worker_test), created fresh and dropped at exit, so the
# examples run as on the documented set-up; ES_README_DB overrides it.  The
# trust recipe creates the roles model_owner, app and reader; they are
# dropped at exit.  Also checked: every function of the extension has its
# complete signature in docs/reference.md, README's size, and README links
# every file of docs/.  Uses PGHOST/PGPORT/PGUSER (a superuser).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
db=${ES_README_DB:-es_worker_test}
roles="model_owner app reader"
work=$(mktemp -d /tmp/es_readme.XXXXXX)
chmod 755 "$work"
cleanup() {
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    for r in $roles; do psql -X -q -d postgres -c "DROP ROLE IF EXISTS $r" >/dev/null 2>&1; done
    [ -n "${made_pb:-}" ] && rm -f /tmp/eventsourced.pb
    rm -rf "$work"
}
trap cleanup EXIT
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}

# The files, in the order they run: README, the order README gives, the rest.
order=$(sed -n '/^## Reference and documentation/,$p' "$root/README.md" |
        grep -o '(docs/[a-z_-]*\.md)' | tr -d '()' | awk '!seen[$0]++')
files="README.md"
for f in $order; do [ -e "$root/$f" ] && files="$files $f"; done
for f in "$root"/docs/*.md; do
    [ -e "$f" ] || continue
    f=docs/$(basename "$f")
    case " $files " in *" $f "*) ;; *) files="$files $f" ;; esac
done

# The extractor: "gen" writes the psql script and the plan; "check" compares.
cat >"$work/readme.pl" <<'PERL'
use strict; use warnings;
my ($mode, $work, $root, @files) = @ARGV;
my @st;          # statements: {file, line, sql, kind, want, code, msgs}
for my $f (@files) {
    open my $fh, '<', "$root/$f" or die "$f: $!";
    my ($in, $indent, $buf, $start, $last, $block) = (0, '', '', 0, undef, 0);
    my ($q, $dtag, $cmt) = ('', '', 0);   # quote char, dollar tag, in /* */
    my $n = 0;
    while (my $line = <$fh>) {
        $n++; chomp $line;
        if (!$in) {
            if ($line =~ /^(\s*)```sql\s*$/) { ($in, $indent, $last, $block) = (1, $1, undef, 0); }
            next;
        }
        if ($line =~ /^\s*```\s*$/) { $in = 0; next; }
        $line =~ s/^\Q$indent\E//;
        if ($buf eq '' && $q eq '' && $dtag eq '' && !$cmt && $line =~ /^\s*(--.*)?$/) {
            my $c = $1 // '';
            if ($c eq '') { $block = 0; next; }
            if ($block && $last && $c =~ /^-- ([ -].*)$/) { push @{$last->{want}}, $1; next; }
            if ($block && $last && $c =~ /^-- ((?:ERROR|DETAIL|HINT):.*)$/) { push @{$last->{msgs}}, $1; next; }
            $block = 0;
            annotate($last, $c, \$block) if $last;
            next;
        }
        $block = 0;
        my $i = 0; my $len = length $line; my $ended = 0;
        $start = $n if $buf eq '';
        while ($i < $len) {
            my $c = substr($line, $i, 1); my $two = substr($line, $i, 2);
            if ($cmt) { if ($two eq '*/') { $cmt = 0; $i += 2; next; } $i++; next; }
            if ($q ne '') { $q = '' if $c eq $q; $i++; next; }
            if ($dtag ne '') {
                if (substr($line, $i, length $dtag) eq $dtag) { $i += length $dtag; $dtag = ''; next; }
                $i++; next;
            }
            if ($two eq '--') {   # a comment: an annotation when a statement just ended
                my $rest = substr($line, $i);
                $line = substr($line, 0, $i); $len = $i;
                if ($ended && $last) { annotate($last, $rest, \$block); }
                last;
            }
            if ($two eq '/*') { $cmt = 1; $i += 2; next; }
            if ($c eq "'" || $c eq '"') { $q = $c; $i++; next; }
            if ($c eq '$' && substr($line, $i) =~ /^(\$[A-Za-z_]*\$)/) { $dtag = $1; $i += length $dtag; next; }
            if ($c eq ';' || $c eq '\\') {   # the end of a statement (";" or a psql \g command)
                my $end = $c eq ';' ? $i + 1 : $len;   # a psql command takes the rest of the line
                my $sql = $buf . substr($line, 0, $end);
                $sql =~ s/^\s+//;
                $last = { file => $f, line => $start, sql => $sql, kind => 'none', want => [], msgs => [] };
                push @st, $last;
                $buf = ''; $ended = 1;
                $line = substr($line, $end); $len = length $line; $i = 0; $start = $n;
                next;
            }
            $ended = 0 unless $c =~ /\s/;
            $i++;
        }
        $buf .= $line . "\n" unless $buf eq '' && $line =~ /^\s*$/;
    }
    die "$f: a statement without its end at line $start\n" if $buf =~ /\S/;
}
sub annotate {
    my ($s, $c, $blockref) = @_;
    if ($c =~ /^--\s*result:\s*(\S.*?)\s*$/) { $s->{kind} = 'inline'; $s->{want} = [$1]; }
    elsif ($c =~ /^--\s*result:\s*$/) { $s->{kind} = 'block'; $s->{want} = []; $$blockref = 1; }
    elsif ($c =~ /^--\s*error:\s*([0-9A-Z]{5})\s*$/) { $s->{code} = $1; $$blockref = 1; }
}

if ($mode eq 'gen') {
    open my $out, '>', "$work/script.sql" or die;
    print $out "\\set VERBOSITY verbose\n\\pset footer off\n";
    for my $k (0 .. $#st) {
        my $s = $st[$k];
        print $out "\\echo '\@\@\@ $k'\n\\warn '\@\@\@ $k'\n";
        print $out "\\pset tuples_only on\n\\pset format unaligned\n" if $s->{kind} eq 'inline';
        print $out "$s->{sql}\n";
        print $out "\\pset tuples_only off\n\\pset format aligned\n" if $s->{kind} eq 'inline';
    }
    print $out "\\echo '\@\@\@ end'\n\\warn '\@\@\@ end'\n";
    printf "# %d statements\n", scalar @st;
    exit 0;
}

# check: split psql's output and errors by statement, compare.
sub chunks {
    my ($file) = @_; my %c; my $k;
    open my $fh, '<', $file or die; 
    while (my $l = <$fh>) {
        chomp $l;
        if ($l =~ /^\@\@\@ (\d+|end)$/) { $k = $1; $c{$k} = []; next; }
        push @{$c{$k}}, $l if defined $k;
    }
    return \%c;
}
my $out = chunks("$work/out"); my $err = chunks("$work/err");
sub pattern {   # a shown value as a regex: "<...>" matches anything
    my ($w) = @_;
    return '^' . join('.*', map { quotemeta } split /<[^<>]+>/, $w, -1) . '$';
}
sub cells {
    my ($l) = @_;
    return '---' if $l =~ /^\s*-[-+]*\s*$/;
    return join '|', map { s/^\s+|\s+$//gr } split /\|/, $l, -1;
}
my %bad;         # kind of failure => [messages], per "README" or "docs"
for my $k (0 .. $#st) {
    my $s = $st[$k];
    my $where = $s->{file} eq 'README.md' ? 'README' : 'docs';
    my $at = "$s->{file}:$s->{line}";
    if (!exists $out->{$k} || !exists $err->{$k}) { push @{$bad{"$where run"}}, "$at: did not run"; next; }
    my @o = grep { !/^Asynchronous notification / } @{$out->{$k}};
    my @e = map { s/^psql:[^:]*:\d+: //r } @{$err->{$k}};
    my @errors = grep { /^(ERROR|FATAL|PANIC):/ } @e;
    if (defined $s->{code}) {
        my ($got) = map { /^\w+:\s+([0-9A-Z]{5}):/ ? $1 : '?' } @errors;
        if (@errors != 1 || $got ne $s->{code}) {
            push @{$bad{"$where errors"}}, "$at: wanted error $s->{code}, got " . (@errors ? join(' / ', @errors) : 'none');
        } else {
            my @shown = map { s/^(\w+:\s+)[0-9A-Z]{5}: /$1/r } grep { /^(ERROR|DETAIL|HINT):/ } @e;
            for my $m (@{$s->{msgs}}) {
                next if grep { $_ =~ pattern($m) } @shown;
                push @{$bad{"$where errors"}}, "$at: the error does not say '$m'; it says: " . join(' / ', @shown);
            }
        }
    } elsif (@errors) {
        push @{$bad{"$where run"}}, "$at: unannounced error: " . join(' / ', grep { /^(ERROR|DETAIL|HINT|FATAL|PANIC):/ } @e);
    }
    next if $s->{kind} eq 'none';
    if ($s->{kind} eq 'inline') {
        my $got = join "\n", grep { /\S/ } @o;
        push @{$bad{"$where results"}}, "$at: shows '$s->{want}[0]', psql prints '$got'"
            unless $got =~ pattern($s->{want}[0]);
    } else {
        my @g = map { cells($_) } grep { /\S/ && !/^\(\d+ rows?\)$/ } @o;
        my @w = map { cells($_) } grep { /\S/ && !/^\s*\(\d+ rows?\)$/ } @{$s->{want}};
        my $ok = @g == @w;
        for my $i (0 .. $#w) { last unless $ok; $ok = $g[$i] =~ pattern($w[$i]); }
        push @{$bad{"$where results"}}, "$at: shows\n#   " . join("\n#   ", @w) . "\n# psql prints\n#   " . join("\n#   ", @g)
            unless $ok;
    }
}
my %count; $count{$_->{file} eq 'README.md' ? 'README' : 'docs'}++ for @st;
for my $where ('README', 'docs') {
    for my $what ('run', 'errors', 'results') {
        my @m = @{$bad{"$where $what"} // []};
        print "# $_\n" for @m;
        printf "%s %s %d %d\n", $where, $what, scalar @m, $count{$where} // 0;
    }
}
PERL

# A fresh database (the one the worker serves), the roles of the trust
# recipe gone, and the descriptor set that docs/protobuf.md reads.
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
for r in $roles; do psql -X -q -d postgres -c "DROP ROLE IF EXISTS $r" >/dev/null 2>&1; done
createdb "$db"
protoc_cmd=$(grep -h '^protoc --include_imports' "$root"/docs/protobuf.md 2>/dev/null | head -1)
[ -e /tmp/eventsourced.pb ] || made_pb=yes
[ -n "$protoc_cmd" ] && (cd "$root" && eval "$protoc_cmd")

# Run every statement in one psql session, as a newcomer would (bounded:
# a statement that waits on a lock must not hang the suite).
# shellcheck disable=SC2086
perl "$work/readme.pl" gen "$work" "$root" $files || echo "# the extractor failed"
timeout 300 psql -X -q -d "$db" -f "$work/script.sql" >"$work/out" 2>"$work/err" ||
    echo "# psql ended with status $?"
# shellcheck disable=SC2086
perl "$work/readme.pl" check "$work" "$root" $files >"$work/result" || echo "# the comparison failed"
grep '^#' "$work/result"
result() {   # result WHERE WHAT: "0 of N" when nothing failed among N statements
    awk -v w="$1" -v k="$2" '$1 == w && $2 == k {print $3 " of " $4}' "$work/result"
}
nonzero() { case "$1" in "0 of 0" | "") echo "no statements" ;; *) echo "$1" ;; esac; }
n_readme=$(awk '$1 == "README" && $2 == "run" {print $4}' "$work/result")
n_docs=$(awk '$1 == "docs" && $2 == "run" {print $4}' "$work/result")
check "README's examples run without an error they do not announce" \
      "$(nonzero "$(result README run)")" "0 of ${n_readme:-?}"
check "README's announced errors happen, with their SQLSTATE and message" \
      "$(nonzero "$(result README errors)")" "0 of ${n_readme:-?}"
check "README's shown results are what psql prints" \
      "$(nonzero "$(result README results)")" "0 of ${n_readme:-?}"
check "the examples of docs/ run without an error they do not announce" \
      "$(result docs run)" "0 of ${n_docs:-?}"
check "the announced errors of docs/ happen, with their SQLSTATE and message" \
      "$(result docs errors)" "0 of ${n_docs:-?}"
check "the shown results of docs/ are what psql prints" \
      "$(result docs results)" "0 of ${n_docs:-?}"

# Every function of the extension (but trigger functions) with its complete
# signature in docs/reference.md: name(arguments) RETURNS result, as
# PostgreSQL prints them, spaces and casts of defaults aside.
missing=$(psql -X -q -t -A -d "$db" -c "
    SELECT p.proname || '(' || pg_get_function_arguments(p.oid) || ')RETURNS' || pg_get_function_result(p.oid)
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'eventsourced' AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
     ORDER BY 1" |
    sed -E "s/::[a-z_ ]+//g; s/timestamp with time zone/timestamptz/g; s/[[:space:]]//g" |
    while read -r sig; do
        tr -d ' \n' <"$root/docs/reference.md" | sed -E 's/timestampwithtimezone/timestamptz/g' |
            grep -qF -- "$sig" || echo "$sig"
    done)
[ -n "$missing" ] && echo "$missing" | sed 's/^/# not in docs\/reference.md: /'
check "docs/reference.md has every function's complete signature" \
      "$( [ -z "$missing" ] && [ -s "$root/docs/reference.md" ] && echo yes)" "yes"

size=$(wc -c <"$root/README.md")
# The manual stays a quick read: details go to docs/ (16 KB since it also
# introduces the proxy and the NATS relay).
check "README.md is at most 16 KB (16,384 bytes)" "$( [ "$size" -le 16384 ] && echo yes || echo "$size bytes")" "yes"

unlinked=""
for f in "$root"/docs/*.md; do
    grep -qF "(docs/$(basename "$f"))" "$root/README.md" || unlinked="$unlinked $(basename "$f")"
done
check "README links every file of docs/" "${unlinked:-none}" "none"
