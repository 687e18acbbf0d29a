package history_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"chatcluster/history"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
	"chatcluster/support"
)

// A store of an earlier build holds visitors and support conversations
// without the collections that find them by _id: Open builds those, so
// that the visitors log in with their tokens and their conversations are
// found, and what is saved afterwards is found too.
func TestLookupsOfAnEarlierBuild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	uri, ns := testenv.Mongo(t), testenv.Namespace(t)
	db := mongoClient(t).Database(ns)
	t.Cleanup(func() { _ = db.Drop(context.Background()) })
	created := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := db.Collection("visitors").InsertMany(ctx, []any{
		bson.D{{Key: "_id", Value: "~vera"}, {Key: "token", Value: "h-vera"}, {Key: "name", Value: "Vera"}, {Key: "channel", Value: "web"}, {Key: "created", Value: created}},
		bson.D{{Key: "_id", Value: "~otto"}, {Key: "token", Value: "h-otto"}, {Key: "name", Value: ""}, {Key: "channel", Value: "app"}, {Key: "created", Value: created}},
	}); err != nil {
		t.Fatal(err)
	}
	var convs []any
	for _, c := range []struct {
		visitor string
		n       int64
		state   string
	}{{"~vera", 1, protocol.SupportClosed}, {"~vera", 2, protocol.SupportClosed}, {"~vera", 3, protocol.SupportQueued}, {"~otto", 1, protocol.SupportClosed}} {
		convs = append(convs, bson.D{{Key: "_id", Value: protocol.SupportConvID(c.visitor, c.n)}, {Key: "visitor", Value: c.visitor},
			{Key: "n", Value: c.n}, {Key: "state", Value: c.state}, {Key: "opened", Value: c.n}, {Key: "epoch", Value: int64(3)}})
	}
	if _, err := db.Collection("support_convs").InsertMany(ctx, convs); err != nil {
		t.Fatal(err)
	}
	var pairs []any
	for _, p := range [][2]string{{"ann", "dm:ann:bo"}, {"bo", "dm:ann:bo"}, {"ann", "dm:ann:cy"}, {"cy", "dm:ann:cy"}, {"~vera", "cs:~vera:3"}, {"ann", "cs:~vera:3"}} {
		pairs = append(pairs, bson.D{{Key: "_id", Value: p[0] + "/" + p[1]}, {Key: "user", Value: p[0]}, {Key: "conv", Value: p[1]}})
	}
	if _, err := db.Collection("user_convs").InsertMany(ctx, pairs); err != nil {
		t.Fatal(err)
	}

	s := openStoreAt(t, uri, ns)
	id, name, channel, err := s.VisitorByToken(ctx, "h-vera")
	if err != nil || id != "~vera" || name != "Vera" || channel != "web" {
		t.Fatalf("VisitorByToken(h-vera) = %q %q %q, %v; want ~vera Vera web", id, name, channel, err)
	}
	if _, _, _, err := s.VisitorByToken(ctx, "h-nobody"); !errors.Is(err, history.ErrNotFound) {
		t.Fatalf("an unknown token: %v, want ErrNotFound", err)
	}
	if _, _, _, err := s.VisitorByToken(ctx, "!built"); !errors.Is(err, history.ErrNotFound) {
		t.Fatalf("the marker as a token: %v, want ErrNotFound", err)
	}
	got, err := s.VisitorConvs(ctx, "~vera", 2)
	if err != nil || len(got) != 2 || got[0].N != 3 || got[1].N != 2 {
		t.Fatalf("VisitorConvs(~vera, 2) = %+v, %v; want 3 then 2", got, err)
	}
	if n, err := s.LastSupportConv(ctx, "~otto"); err != nil || n != 1 {
		t.Fatalf("LastSupportConv(~otto) = %d, %v; want 1", n, err)
	}

	if got, err := s.DirectConvs(ctx, "ann"); err != nil || !slices.Equal(got, []string{"cs:~vera:3", "dm:ann:bo", "dm:ann:cy"}) {
		t.Fatalf("DirectConvs(ann) = %v, %v; want what user_convs held", got, err)
	}

	// What this build saves, with a number whose conversation was never
	// written (a failed save) in between.
	if err := s.CreateVisitor(ctx, "~ida", "h-ida", "Ida", "web"); err != nil {
		t.Fatal(err)
	}
	if id, _, _, err := s.VisitorByToken(ctx, "h-ida"); err != nil || id != "~ida" {
		t.Fatalf("VisitorByToken(h-ida) = %q, %v", id, err)
	}
	c5 := support.OpenNew("~vera", "Vera", "web", 4, 5000)
	if err := s.SaveSupportConv(ctx, c5, 4); err != nil {
		t.Fatal(err)
	}
	got, err = s.VisitorConvs(ctx, "~vera", protocol.MaxSupportConvs)
	var ns2 []int64
	for _, c := range got {
		ns2 = append(ns2, c.N)
	}
	if err != nil || len(ns2) != 4 || ns2[0] != 5 || ns2[1] != 3 || ns2[3] != 1 {
		t.Fatalf("VisitorConvs(~vera) numbers %v, %v; want 5 3 2 1", ns2, err)
	}
	// A second Open finds the collections built and leaves them.
	s2 := openStoreAt(t, uri, ns)
	if n, err := s2.LastSupportConv(ctx, "~vera"); err != nil || n != 5 {
		t.Fatalf("LastSupportConv(~vera) after a second Open = %d, %v; want 5", n, err)
	}
	if err := s2.UpsertMessages(ctx, []protocol.Message{{ID: "d9", Conv: "dm:ann:dee", Seq: 1, From: "dee", To: "ann", Text: "t", TS: 9}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s2.DirectConvs(ctx, "ann"); err != nil || !slices.Equal(got, []string{"cs:~vera:3", "dm:ann:bo", "dm:ann:cy", "dm:ann:dee"}) {
		t.Fatalf("DirectConvs(ann) after a message = %v, %v", got, err)
	}
}
