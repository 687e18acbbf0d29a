package main

import (
	"bufio"
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TestServe builds the command, runs it as a process on a free port and
// checks, with the driver the product uses, what the product relies on:
// insert, find with sort, upsert, a unique index, lookups by _id that use
// an index, then a clean stop.
func TestServe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mongostore")
	build := exec.Command("go", "build", "-tags", "ferretdb_no_postgresql", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build: %v", err)
	}

	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--dir", filepath.Join(dir, "data"))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	lines := bufio.NewScanner(out)
	if !lines.Scan() {
		t.Fatalf("no ready line: %v", lines.Err())
	}
	first := lines.Text()
	go func() {
		for lines.Scan() {
			t.Log(lines.Text())
		}
		exited <- cmd.Wait()
	}()
	const prefix = "mongostore ready uri="
	if !strings.HasPrefix(first, prefix) {
		t.Fatalf("unexpected first line %q", first)
	}
	uri := strings.Fields(strings.TrimPrefix(first, prefix))[0]

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	if err := client.Ping(ctx, nil); err != nil {
		t.Fatalf("ping: %v", err)
	}

	coll := client.Database("check").Collection("messages")
	if _, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "conv", Value: 1}, {Key: "seq", Value: 1}},
		Options: options.Index().SetUnique(true),
	}); err != nil {
		t.Fatalf("create unique index: %v", err)
	}
	docs := []any{
		bson.D{{Key: "_id", Value: "m2"}, {Key: "conv", Value: "room:a"}, {Key: "seq", Value: 2}, {Key: "text", Value: "two"}},
		bson.D{{Key: "_id", Value: "m1"}, {Key: "conv", Value: "room:a"}, {Key: "seq", Value: 1}, {Key: "text", Value: "one"}},
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		t.Fatalf("insert: %v", err)
	}
	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "m3"}, {Key: "conv", Value: "room:a"}, {Key: "seq", Value: 1}})
	if !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("insert of a duplicate (conv, seq): got %v, want a duplicate key error", err)
	}
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "m1"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "conv", Value: "room:a"}, {Key: "seq", Value: 1}, {Key: "text", Value: "one"}}}},
		options.UpdateOne().SetUpsert(true)); err != nil {
		t.Fatalf("idempotent upsert: %v", err)
	}

	cur, err := coll.Find(ctx, bson.D{{Key: "conv", Value: "room:a"}}, options.Find().SetSort(bson.D{{Key: "seq", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var got []struct {
		ID   string `bson:"_id"`
		Seq  int    `bson:"seq"`
		Text string `bson:"text"`
	}
	if err := cur.All(ctx, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "m1" || got[1].ID != "m2" || got[0].Text != "one" {
		t.Fatalf("find: got %+v", got)
	}

	// The collection gets the index for lookups by _id (within a sweep).
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "data", "check.sqlite")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var n int
		err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master m JOIN _ferretdb_collections c
			ON m.type = 'index' AND m.name = ? || c.table_name WHERE c.name = 'messages'`, idIndexPrefix).Scan(&n)
		if err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the messages collection has no _id lookup index (%d, %v)", n, err)
		}
		time.Sleep(100 * time.Millisecond) // polling the server's sweep, bounded above
	}
	db.Close()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("did not exit within 15s of SIGTERM")
	}
}
