package history

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// seedsColl records, per conversation, the highest value its seq counter
// was seeded with after Redis lost its data:
//
//	seq_seeds {_id: conv, seq, updated}
//
// A seeded counter starts a gap above what MongoDB holds (chatlog.SeqGap),
// so the messages numbered after it may all be in Redis only. Should Redis
// lose them too, before the history writer stored any, the highest message
// MongoDB holds is below the gap, and a counter seeded from it alone would
// give their seqs again. The next seeding starts above this instead.
const seedsColl = "seq_seeds"

// SeededSeq returns the highest value conv's counter was seeded with, 0
// if it never was.
func (s *Store) SeededSeq(ctx context.Context, conv string) (int64, error) {
	n, err := numberByID(ctx, s.seeds, conv, "seq")
	if err != nil {
		return 0, fmt.Errorf("history: seeded seq %s: %w", conv, err)
	}
	return n, nil
}

// RaiseSeededSeq records that conv's counter is seeded with seq (a lower
// value than the one recorded changes nothing). Two nodes that create the
// document at once collide on its _id: the loser writes again, as an
// update.
func (s *Store) RaiseSeededSeq(ctx context.Context, conv string, seq int64) error {
	now := time.Now().UTC().Truncate(time.Millisecond)
	for attempt := 0; ; attempt++ {
		_, err := s.seeds.UpdateOne(ctx, bson.D{{Key: "_id", Value: conv}}, bson.D{
			{Key: "$max", Value: bson.D{{Key: "seq", Value: seq}}},
			{Key: "$set", Value: bson.D{{Key: "updated", Value: now}}},
		}, options.UpdateOne().SetUpsert(true))
		var we mongo.WriteException
		if err == nil || attempt > 0 || !errors.As(err, &we) || !isDupKey(we) {
			if err != nil {
				return fmt.Errorf("history: raise seeded seq %s: %w", conv, err)
			}
			return nil
		}
	}
}

func isDupKey(we mongo.WriteException) bool {
	for _, e := range we.WriteErrors {
		if isDuplicateKey(e.Code) {
			return true
		}
	}
	return false
}
