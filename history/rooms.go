package history

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"chatcluster/room"
)

// ErrFenced means a leader with a newer epoch has written the room: the
// writer has been deposed and its change is not stored.
var ErrFenced = errors.New("history: a newer leader owns this room")

// roomDoc is a room as stored. Epoch is the epoch of the leader that wrote
// it last; an older leader can no longer replace it. Owner is the user
// whose join created the room (absent on rooms of earlier builds). A
// deleted room keeps its document, without members, so that its name is
// not used again.
type roomDoc struct {
	Name    string    `bson:"_id"`
	Owner   string    `bson:"owner,omitempty"`
	Members []string  `bson:"members"`
	Epoch   int64     `bson:"epoch"`
	Updated time.Time `bson:"updated"`
	Deleted bool      `bson:"deleted,omitempty"`
}

// SaveRoom stores room r (its owner and members) as written by the leader
// of epoch. It returns ErrFenced when a leader with a newer epoch has
// written the room.
func (s *Store) SaveRoom(ctx context.Context, r room.Room, epoch int64) error {
	return s.saveRoom(ctx, roomDoc{Name: r.Name, Owner: r.Owner, Members: r.Members, Epoch: epoch})
}

// DeleteRoom stores that room was deleted, by the leader of epoch: its
// document stays, without members and marked deleted. ErrFenced as
// SaveRoom.
func (s *Store) DeleteRoom(ctx context.Context, name string, epoch int64) error {
	return s.saveRoom(ctx, roomDoc{Name: name, Epoch: epoch, Deleted: true})
}

func (s *Store) saveRoom(ctx context.Context, doc roomDoc) error {
	name, epoch := doc.Name, doc.Epoch
	if doc.Members == nil {
		doc.Members = []string{}
	}
	doc.Updated = time.Now().UTC().Truncate(time.Millisecond)
	// The filter only matches a document of this or an older epoch; when a
	// newer one exists the upsert tries to insert a second document with
	// the same _id, which the server refuses.
	filter := bson.D{{Key: "_id", Value: name}, {Key: "epoch", Value: bson.D{{Key: "$lte", Value: epoch}}}}
	_, err := s.rooms.ReplaceOne(ctx, filter, doc, options.Replace().SetUpsert(true))
	switch {
	case mongo.IsDuplicateKeyError(err):
		return ErrFenced
	case err != nil:
		return fmt.Errorf("history: save room %s: %w", name, err)
	}
	return nil
}

// ClaimRooms stamps every room with epoch, so that from now on a leader
// with an older epoch can no longer write any of them (SaveRoom returns
// ErrFenced). A new leader calls it before it loads the rooms.
func (s *Store) ClaimRooms(ctx context.Context, epoch int64) error {
	_, err := s.rooms.UpdateMany(ctx, bson.D{{Key: "epoch", Value: bson.D{{Key: "$lt", Value: epoch}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "epoch", Value: epoch}}}})
	if err != nil {
		return fmt.Errorf("history: claim rooms: %w", err)
	}
	return nil
}

// Rooms returns every stored room.
func (s *Store) Rooms(ctx context.Context) ([]room.Room, error) {
	cur, err := s.rooms.Find(ctx, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("history: rooms: %w", err)
	}
	var docs []roomDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("history: rooms: %w", err)
	}
	out := make([]room.Room, len(docs))
	for i, d := range docs {
		out[i] = room.Room{Name: d.Name, Owner: d.Owner, Members: d.Members, Deleted: d.Deleted}
	}
	return out, nil
}
