package main

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ferretLookup is the statement FerretDB's SQLite backend looks a document
// up by _id with (metadata.IDColumn in its backends/sqlite).
const ferretLookup = `SELECT _ferretdb_sjson FROM %q WHERE _ferretdb_sjson->'$._id' = ?`

// newFerretDB makes a database file laid out as FerretDB lays one out, with
// the given collection tables and the unique _id index FerretDB creates.
func newFerretDB(t *testing.T, path string, tables ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(wal)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stmts := []string{`CREATE TABLE IF NOT EXISTS "_ferretdb_collections" (name TEXT NOT NULL UNIQUE, table_name TEXT NOT NULL UNIQUE, settings TEXT NOT NULL) STRICT`}
	for _, tb := range tables {
		stmts = append(stmts,
			`CREATE TABLE "`+tb+`" (_ferretdb_sjson TEXT NOT NULL CHECK(_ferretdb_sjson != '')) STRICT`,
			`CREATE UNIQUE INDEX "`+tb+`__id_" ON "`+tb+`" (_ferretdb_sjson->"_id")`,
			`INSERT INTO _ferretdb_collections VALUES ('`+tb+`', '`+tb+`', '{}')`)
	}
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// plan returns SQLite's plan for FerretDB's lookup by _id in table, on a
// connection of its own.
func plan(t *testing.T, path, table string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("EXPLAIN QUERY PLAN "+strings.Replace(ferretLookup, "%q", `"`+table+`"`, 1), `"x"`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		out = append(out, detail)
	}
	return strings.Join(out, "; ")
}

// A sweep gives every collection table an index FerretDB's lookup by _id
// uses (its own unique index is on another expression, which SQLite does
// not match), including tables and databases made after earlier sweeps,
// and a database made again under the same name.
func TestIDIndexer(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	x := newIDIndexer(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a := filepath.Join(dir, "a.sqlite")
	newFerretDB(t, a, "users_1")
	if p := plan(t, a, "users_1"); !strings.Contains(p, "SCAN") {
		t.Fatalf("without the index the lookup should scan: %s", p)
	}
	x.sweep(ctx)
	if p := plan(t, a, "users_1"); !strings.Contains(p, "USING INDEX "+idIndexPrefix+"users_1") {
		t.Fatalf("after a sweep: %s", p)
	}

	newFerretDB(t, a, "rooms_2")
	b := filepath.Join(dir, "b.sqlite")
	newFerretDB(t, b, "chunks_3")
	x.sweep(ctx)
	for _, c := range []struct{ path, table string }{{a, "rooms_2"}, {b, "chunks_3"}} {
		if p := plan(t, c.path, c.table); !strings.Contains(p, "USING INDEX "+idIndexPrefix+c.table) {
			t.Fatalf("%s after the next sweep: %s", c.table, p)
		}
	}

	// Dropped and made again, as FerretDB does it: a new file.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		_ = os.Remove(b + suffix)
	}
	newFerretDB(t, b, "chunks_3")
	x.sweep(ctx)
	if p := plan(t, b, "chunks_3"); !strings.Contains(p, "USING INDEX "+idIndexPrefix+"chunks_3") {
		t.Fatalf("a database made again: %s", p)
	}
}
