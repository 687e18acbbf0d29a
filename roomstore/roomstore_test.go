package roomstore

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"chatcluster/history"
	"chatcluster/internal/testenv"
	"chatcluster/room"
)

// fakeDB is MongoDB's part, which the test takes away and brings back.
type fakeDB struct {
	mu      sync.Mutex
	down    bool
	epoch   int64
	rooms   map[string][]string
	owner   map[string]string
	deleted map[string]bool
}

var errDown = errors.New("no primary")

func (f *fakeDB) ClaimRooms(_ context.Context, epoch int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errDown
	}
	f.epoch = max(f.epoch, epoch)
	return nil
}

func (f *fakeDB) Rooms(context.Context) ([]room.Room, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	var out []room.Room
	for n, m := range f.rooms {
		out = append(out, room.Room{Name: n, Owner: f.owner[n], Members: m, Deleted: f.deleted[n]})
	}
	return out, nil
}

func (f *fakeDB) SaveRoom(_ context.Context, r room.Room, epoch int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.down:
		return errDown
	case epoch < f.epoch:
		return history.ErrFenced
	}
	f.rooms[r.Name] = r.Members
	if f.owner == nil {
		f.owner = map[string]string{}
	}
	f.owner[r.Name] = r.Owner
	delete(f.deleted, r.Name)
	return nil
}

func (f *fakeDB) DeleteRoom(_ context.Context, name string, epoch int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.down:
		return errDown
	case epoch < f.epoch:
		return history.ErrFenced
	}
	if f.deleted == nil {
		f.deleted = map[string]bool{}
	}
	f.rooms[name], f.deleted[name] = nil, true
	return nil
}

func (f *fakeDB) Ping(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errDown
	}
	return nil
}

func (f *fakeDB) set(down bool) { f.mu.Lock(); f.down = down; f.mu.Unlock() }

func find(rooms []room.Room, name string) []string {
	for _, r := range rooms {
		if r.Name == name {
			return r.Members
		}
	}
	return nil
}

func TestMembershipWhileMongoDBIsAway(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	db := &fakeDB{rooms: map[string][]string{"a": {"x"}}}
	s := New(db, rdb, testenv.Namespace(t)+":", zerolog.Nop())

	// Before any load the copy is not whole: without MongoDB, no rooms.
	db.set(true)
	if _, err := s.Rooms(ctx); !errors.Is(err, errDown) {
		t.Fatalf("rooms without MongoDB and without a whole copy: %v", err)
	}
	db.set(false)
	if err := s.ClaimRooms(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if rooms, err := s.Rooms(ctx); err != nil || !slices.Equal(find(rooms, "a"), []string{"x"}) {
		t.Fatalf("rooms = %v, %v", rooms, err)
	}

	// MongoDB goes away: changes take effect from the copy.
	db.set(true)
	if err := s.SaveRoom(ctx, room.Room{Name: "a", Members: []string{"x", "y"}}, 5); err != nil {
		t.Fatalf("save while MongoDB is away: %v", err)
	}
	if err := s.SaveRoom(ctx, room.Room{Name: "b", Owner: "z", Members: []string{"z"}}, 5); err != nil {
		t.Fatal(err)
	}
	// A new leader loads the copy.
	if err := s.ClaimRooms(ctx, 6); err != nil {
		t.Fatal(err)
	}
	rooms, err := s.Rooms(ctx)
	if err != nil || !slices.Equal(find(rooms, "a"), []string{"x", "y"}) || !slices.Equal(find(rooms, "b"), []string{"z"}) {
		t.Fatalf("rooms from the copy = %v, %v", rooms, err)
	}
	for _, r := range rooms {
		if r.Name == "b" && r.Owner != "z" {
			t.Fatalf("the copy lost b's owner: %+v", r)
		}
	}
	// The deposed leader is fenced in the copy too.
	if err := s.SaveRoom(ctx, room.Room{Name: "a"}, 5); !errors.Is(err, history.ErrFenced) {
		t.Fatalf("save of an older epoch: %v, want ErrFenced", err)
	}
	if n, err := s.Flush(ctx, 6); err == nil || n != 0 {
		t.Fatalf("flush while MongoDB is away: %d, %v", n, err)
	}

	// MongoDB is back: a load prefers the unflushed changes, and Flush
	// writes them.
	db.set(false)
	rooms, err = s.Rooms(ctx)
	if err != nil || !slices.Equal(find(rooms, "a"), []string{"x", "y"}) || !slices.Equal(find(rooms, "b"), []string{"z"}) {
		t.Fatalf("rooms with unflushed changes = %v, %v", rooms, err)
	}
	if n, err := s.Flush(ctx, 6); err != nil || n != 2 {
		t.Fatalf("flush = %d, %v; want 2", n, err)
	}
	if !slices.Equal(db.rooms["a"], []string{"x", "y"}) || !slices.Equal(db.rooms["b"], []string{"z"}) || db.owner["b"] != "z" {
		t.Fatalf("MongoDB holds %v, owners %v", db.rooms, db.owner)
	}
	if n, err := s.Flush(ctx, 6); err != nil || n != 0 {
		t.Fatalf("second flush = %d, %v", n, err)
	}
	// From now on MongoDB wins for rooms not changed during an outage.
	db.rooms["a"] = []string{"w"}
	if rooms, err := s.Rooms(ctx); err != nil || !slices.Equal(find(rooms, "a"), []string{"w"}) {
		t.Fatalf("rooms = %v, %v", rooms, err)
	}
}

// A room deleted while MongoDB is away is deleted for a new leader that
// loads the copy, and in MongoDB once it is back.
func TestDeleteWhileMongoDBIsAway(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	db := &fakeDB{rooms: map[string][]string{"a": {"x"}, "b": {"y"}}}
	s := New(db, rdb, testenv.Namespace(t)+":", zerolog.Nop())
	if err := s.ClaimRooms(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rooms(ctx); err != nil {
		t.Fatal(err)
	}
	deleted := func(rooms []room.Room, name string) bool {
		for _, r := range rooms {
			if r.Name == name {
				return r.Deleted && len(r.Members) == 0
			}
		}
		return false
	}
	db.set(true)
	if err := s.DeleteRoom(ctx, "a", 5); err != nil {
		t.Fatalf("delete while MongoDB is away: %v", err)
	}
	rooms, err := s.Rooms(ctx)
	if err != nil || !deleted(rooms, "a") || deleted(rooms, "b") {
		t.Fatalf("rooms from the copy = %+v, %v; want a deleted, b not", rooms, err)
	}
	db.set(false)
	if rooms, err = s.Rooms(ctx); err != nil || !deleted(rooms, "a") {
		t.Fatalf("rooms with the delete unflushed = %+v, %v", rooms, err)
	}
	if n, err := s.Flush(ctx, 5); err != nil || n != 1 {
		t.Fatalf("flush = %d, %v; want 1", n, err)
	}
	if !db.deleted["a"] || db.deleted["b"] {
		t.Fatalf("MongoDB holds deleted %v", db.deleted)
	}
	// Deleted in MongoDB, with nothing left to flush: still deleted.
	if rooms, err = s.Rooms(ctx); err != nil || !deleted(rooms, "a") {
		t.Fatalf("rooms after the flush = %+v, %v", rooms, err)
	}
}
