package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	_ "modernc.org/sqlite" // the database/sql driver FerretDB uses too
)

// The embedded store keeps each database in <dir>/<db>.sqlite and each
// collection in a table with one JSON column. FerretDB looks a document up
// by _id with WHERE _ferretdb_sjson->'$._id' = ?, but the unique index it
// creates for _id is on the expression _ferretdb_sjson->"_id": SQLite
// matches indexes by expression, not by meaning, so every find, update and
// delete by _id scanned the whole table (50 ms for a lookup in 40,000
// documents). The indexer adds, to every collection table, an index on the
// very expression the lookups use; uniqueness stays with FerretDB's own
// index.

// idIndexPrefix starts the name of the indexes the indexer creates. The
// names FerretDB gives are "<table>_<index name>" with table
// "<collection>_<8 hex digits>", so none starts with this.
const idIndexPrefix = "mongostore_id_"

// idIndexer gives the collection tables of the databases in dir the index
// above. It is owned by one goroutine (run).
//
// It opens a database file only for the moment of a check, and only when
// the file or its write-ahead log changed since the last check: SQLite
// deletes a database's log by name when its last connection closes, so a
// connection held open across FerretDB dropping the database (it closes
// its connections, then removes the file) and making one of the same name
// would take the new database's log with it.
type idIndexer struct {
	dir  string
	log  *slog.Logger
	seen map[string]fileState // by database file path: the state last checked
}

// fileState is what a check saw of a database file.
type fileState struct {
	ino           uint64
	main, wal     time.Time // modification times of the file and its log
	mainSz, walSz int64
}

func newIDIndexer(dir string, log *slog.Logger) *idIndexer {
	return &idIndexer{dir: dir, log: log, seen: map[string]fileState{}}
}

// run sweeps at once and then every interval until ctx is done.
func (x *idIndexer) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		x.sweep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweep indexes the tables of every database that changed since the last
// sweep.
func (x *idIndexer) sweep(ctx context.Context) {
	paths, err := filepath.Glob(filepath.Join(x.dir, "*.sqlite"))
	if err != nil {
		x.log.Error("mongostore: listing databases", "err", err)
		return
	}
	present := make(map[string]bool, len(paths))
	for _, p := range paths {
		present[p] = true
		if ctx.Err() != nil {
			return
		}
		st, err := stateOf(p)
		if err != nil {
			delete(x.seen, p) // dropped meanwhile
			continue
		}
		if old, ok := x.seen[p]; ok && old == st {
			continue
		}
		if err := x.index(ctx, p, st.ino); err != nil {
			// Dropped meanwhile, or busy: the next sweep retries.
			if ctx.Err() == nil {
				x.log.Debug("mongostore: indexing _id", "db", p, "err", err)
			}
			delete(x.seen, p)
			continue
		}
		// What the check saw, or newer: our own index changes the files.
		if st, err = stateOf(p); err == nil {
			x.seen[p] = st
		}
	}
	for p := range x.seen {
		if !present[p] {
			delete(x.seen, p)
		}
	}
}

// index makes sure every collection table of the database file p (inode
// ino) has its _id lookup index.
func (x *idIndexer) index(ctx context.Context, p string, ino uint64) (err error) {
	// mode=rw: never create a file that was dropped meanwhile.
	db, err := sql.Open("sqlite", "file:"+p+"?mode=rw&_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	defer func() {
		// If the database was dropped while we had it open, closing would
		// delete by name a log that may belong to a new database already:
		// leave the connection open instead (a rare, bounded leak).
		if now, err := inode(p); err == nil && now != ino {
			x.log.Warn("mongostore: database replaced while indexing; leaving its old file open", "db", p)
			return
		}
		_ = db.Close()
	}()
	tables, err := x.unindexed(ctx, db)
	if err != nil {
		return err
	}
	for _, t := range tables {
		start := time.Now()
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, idIndexPrefix+t, t)
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("index %s: %w", t, err)
		}
		x.log.Info("mongostore: indexed _id lookups", "db", filepath.Base(p), "table", t, "took", time.Since(start))
	}
	return nil
}

// unindexed returns the collection tables of db that lack the lookup index.
func (x *idIndexer) unindexed(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, `
		SELECT c.table_name FROM _ferretdb_collections c
		WHERE NOT EXISTS (SELECT 1 FROM sqlite_master m WHERE m.type = 'index' AND m.name = ? || c.table_name)
		AND EXISTS (SELECT 1 FROM sqlite_master m WHERE m.type = 'table' AND m.name = c.table_name)`, idIndexPrefix)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil, nil // a database being created: nothing in it yet
		}
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// stateOf returns what a check compares of the database file p.
func stateOf(p string) (fileState, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return fileState{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileState{}, errors.New("no inode number")
	}
	s := fileState{ino: st.Ino, main: fi.ModTime(), mainSz: fi.Size()}
	if wi, err := os.Stat(p + "-wal"); err == nil {
		s.wal, s.walSz = wi.ModTime(), wi.Size()
	}
	return s, nil
}

// inode returns the inode number of the file at p.
func inode(p string) (uint64, error) {
	s, err := stateOf(p)
	return s.ino, err
}
