package history_test

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"testing"
	"time"

	"chatcluster/history"
	"chatcluster/protocol"
	"chatcluster/room"
)

func TestRoomsSaveLoadAndFence(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if got, err := s.Rooms(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Rooms of a new store = %v, %v", got, err)
	}
	if err := s.SaveRoom(ctx, room.Room{Name: "lobby", Owner: "alice", Members: []string{"alice", "bob"}}, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRoom(ctx, room.Room{Name: "empty"}, 5); err != nil {
		t.Fatal(err)
	}
	// The same epoch may write again; a newer one too.
	if err := s.SaveRoom(ctx, room.Room{Name: "lobby", Owner: "alice", Members: []string{"alice", "bob", "carol"}}, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRoom(ctx, room.Room{Name: "lobby", Owner: "alice", Members: []string{"bob", "carol"}}, 9); err != nil {
		t.Fatal(err)
	}
	// A deposed leader cannot overwrite what a newer one wrote.
	if err := s.SaveRoom(ctx, room.Room{Name: "lobby", Owner: "mallory", Members: []string{"mallory"}}, 7); !errors.Is(err, history.ErrFenced) {
		t.Fatalf("save by an older epoch: %v, want ErrFenced", err)
	}
	// A new leader claims every room: the one before can write none.
	if err := s.ClaimRooms(ctx, 12); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRoom(ctx, room.Room{Name: "empty", Members: []string{"mallory"}}, 9); !errors.Is(err, history.ErrFenced) {
		t.Fatalf("save by the previous leader after a claim: %v, want ErrFenced", err)
	}
	got, err := s.Rooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(got, func(i, j int) bool { return got[i].Name < got[j].Name })
	want := []room.Room{{Name: "empty", Members: []string{}}, {Name: "lobby", Owner: "alice", Members: []string{"bob", "carol"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Rooms = %+v, want %+v", got, want)
	}
}

// A deleted room keeps its document, without members, and a deposed
// leader cannot bring it back.
func TestRoomDelete(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.SaveRoom(ctx, room.Room{Name: "lobby", Members: []string{"alice"}}, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRoom(ctx, "lobby", 6); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRoom(ctx, room.Room{Name: "lobby", Members: []string{"alice"}}, 5); !errors.Is(err, history.ErrFenced) {
		t.Fatalf("save by an older epoch after the delete: %v, want ErrFenced", err)
	}
	got, err := s.Rooms(ctx)
	want := []room.Room{{Name: "lobby", Members: []string{}, Deleted: true}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Rooms = %+v, %v; want %+v", got, err, want)
	}
}

func TestDirectConvs(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs := []protocol.Message{
		{ID: "d1", Conv: "dm:ann:bo", Seq: 1, From: "ann", To: "bo", Text: "t", TS: 1},
		{ID: "d2", Conv: "dm:ann:bo", Seq: 2, From: "bo", To: "ann", Text: "t", TS: 2},
		{ID: "d3", Conv: "dm:ann:cy", Seq: 1, From: "cy", To: "ann", Text: "t", TS: 3},
		{ID: "d4", Conv: "dm:bo:cy", Seq: 1, From: "bo", To: "cy", Text: "t", TS: 4},
		{ID: "r1", Conv: "room:x", Seq: 1, From: "ann", Room: "x", Text: "t", TS: 5},
	}
	if err := s.UpsertMessages(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	got, err := s.DirectConvs(ctx, "ann")
	if err != nil || !reflect.DeepEqual(got, []string{"dm:ann:bo", "dm:ann:cy"}) {
		t.Fatalf("DirectConvs(ann) = %v, %v", got, err)
	}
}
