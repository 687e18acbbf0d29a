package history

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// readsColl holds how far each user has read each conversation:
//
//	read_positions {_id: conv + " " + user, conv, user, seq, updated}
//
// Redis is where read positions are kept first (package receipt); this is
// their durable copy, written behind, off the request path, and read when
// Redis has none (it lost its data).
//
// Unlike messages, a position is a document that changes: it is written by
// an upsert that raises seq ($max). On the embedded SQLite-backed store an
// update is a read and a replace, so of two writes of one document at once
// (the same user read the same conversation on two nodes within the same
// fraction of a second) one can undo the other: the stored position is then
// the lower of the two, a little behind, until the user's next read raises
// it again. Positions only ever rise by reading, which writes again, so
// nothing is lost for long; an insert-only log with a lookup of its newest
// entry would cost a read of several documents for every position instead.
const readsColl = "read_positions"

// ReadPosition is how far User has read Conv: the highest seq marked read.
type ReadPosition struct {
	Conv string
	User string
	Seq  int64
}

type readDoc struct {
	ID      string    `bson:"_id"`
	Conv    string    `bson:"conv"`
	User    string    `bson:"user"`
	Seq     int64     `bson:"seq"`
	Updated time.Time `bson:"updated"`
}

// readID is the _id of a position. Names never hold a space.
func readID(conv, user string) string { return conv + " " + user }

// SaveReadPositions raises each position to the one given (a lower one
// changes nothing), creating its document if there is none, in one
// unordered bulk write. Two stores that create the same document at once
// collide on its _id: the loser writes again, as an update.
func (s *Store) SaveReadPositions(ctx context.Context, ps []ReadPosition) error {
	if len(ps) == 0 {
		return nil
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	models := func(ps []ReadPosition) []mongo.WriteModel {
		out := make([]mongo.WriteModel, len(ps))
		for i, p := range ps {
			out[i] = mongo.NewUpdateOneModel().
				SetFilter(bson.D{{Key: "_id", Value: readID(p.Conv, p.User)}}).
				SetUpdate(bson.D{
					{Key: "$max", Value: bson.D{{Key: "seq", Value: p.Seq}}},
					{Key: "$set", Value: bson.D{{Key: "conv", Value: p.Conv}, {Key: "user", Value: p.User}, {Key: "updated", Value: now}}},
				}).
				SetUpsert(true)
		}
		return out
	}
	for attempt := 0; ; attempt++ {
		_, err := s.reads.BulkWrite(ctx, models(ps), options.BulkWrite().SetOrdered(false))
		if err == nil {
			return nil
		}
		var bwe mongo.BulkWriteException
		if attempt > 0 || !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
			return fmt.Errorf("history: save read positions: %w", err)
		}
		again := make([]ReadPosition, 0, len(bwe.WriteErrors))
		for _, we := range bwe.WriteErrors {
			if !isDuplicateKey(we.Code) || we.Index < 0 || we.Index >= len(ps) {
				return fmt.Errorf("history: save read positions: %w", err)
			}
			again = append(again, ps[we.Index])
		}
		ps = again
	}
}

// readLookups bounds the lookups ReadPositions has in flight at once.
const readLookups = 4

// ReadPositions returns the stored positions of the conversations and
// users of ps (their Seq is ignored), in the same order: Seq 0 where none
// is stored. Each is a lookup by _id, a few at a time.
func (s *Store) ReadPositions(ctx context.Context, ps []ReadPosition) ([]ReadPosition, error) {
	out := make([]ReadPosition, len(ps))
	copy(out, ps)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan int)
	)
	for range min(readLookups, len(ps)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var d readDoc
				err := s.reads.FindOne(ctx, bson.D{{Key: "_id", Value: readID(ps[i].Conv, ps[i].User)}}).Decode(&d)
				switch {
				case err == nil:
					out[i].Seq = d.Seq
				case errors.Is(err, mongo.ErrNoDocuments):
					out[i].Seq = 0
				default:
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range ps {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("history: read positions: %w", firstErr)
	}
	return out, nil
}
