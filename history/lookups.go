package history

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The embedded store (FerretDB on SQLite) finds a document without reading
// the whole collection only by its _id: any other filter is a scan, whose
// cost grows with every visitor and conversation a deployment has seen.
// So every lookup a request makes is by _id, through these collections:
//
//	visitor_tokens:   {_id: hash of a visitor's token, visitor}
//	support_visitors: {_id: visitor, last: its highest conversation number}
//	user_conv_lists:  {_id: user + "/" + k, user, convs}, k < convBuckets:
//	                  the direct and support conversations of each user
//	                  (store.go), read after Redis lost the user's list
//
// Each is written before what it points to is (a token before it is
// handed out, a visitor's last number before its conversation, a
// conversation before its messages), so it never lags behind. A store of
// an earlier build lacks them: Open builds them once, from one scan (of
// visitors, support_convs and user_convs), and records that with a
// document of _id builtID.
//
// support_visitors and user_conv_lists are updated in place ($max,
// $addToSet). On the embedded store an update is a read and a replace, so
// two at once on one document can lose one: a user_conv_lists entry only
// while two history writers overlap at a lease handover, and the
// conversation is back in the user's list in Redis with its next message.
// support_visitors is written by the leader alone.
const (
	tokensColl    = "visitor_tokens"
	csVisitorColl = "support_visitors"
	builtID       = "!built" // neither a token hash (hex) nor a visitor id (~...)
)

// tokenDoc maps a visitor token's hash to its visitor.
type tokenDoc struct {
	Hash    string `bson:"_id"`
	Visitor string `bson:"visitor"`
}

// buildOnce runs build unless coll records that it ran to its end before,
// and records that it did.
func buildOnce(ctx context.Context, coll *mongo.Collection, build func(context.Context) error) error {
	err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: builtID}}).Err()
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, mongo.ErrNoDocuments):
		return fmt.Errorf("build %s: %w", coll.Name(), err)
	}
	if err := build(ctx); err != nil {
		return fmt.Errorf("build %s: %w", coll.Name(), err)
	}
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: builtID}}); err != nil && !mongo.IsDuplicateKeyError(err) {
		return fmt.Errorf("build %s: %w", coll.Name(), err)
	}
	return nil
}

// buildLookups makes visitor_tokens and support_visitors hold what the
// visitors and support conversations of an earlier build need.
func (s *Store) buildLookups(ctx context.Context) error {
	err := buildOnce(ctx, s.tokens, func(ctx context.Context) error {
		cur, err := s.visitors.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "token", Value: 1}}))
		if err != nil {
			return err
		}
		var docs []visitorDoc
		if err := cur.All(ctx, &docs); err != nil {
			return err
		}
		for _, d := range docs {
			if err := s.putToken(ctx, d.Token, d.ID); err != nil {
				return err
			}
		}
		if len(docs) > 0 {
			s.log.Info().Int("visitors", len(docs)).Msg("visitor tokens indexed by _id")
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = buildOnce(ctx, s.convLists, func(ctx context.Context) error {
		cur, err := s.convs.Find(ctx, bson.D{}, options.Find().SetBatchSize(1000))
		if err != nil {
			return err
		}
		defer cur.Close(ctx)
		lists, owner := map[string][]string{}, map[string]string{}
		n := 0
		flush := func() error {
			if len(lists) == 0 {
				return nil
			}
			err := s.addToLists(ctx, lists, owner)
			clear(lists)
			clear(owner)
			return err
		}
		for cur.Next(ctx) {
			var d struct {
				User string `bson:"user"`
				Conv string `bson:"conv"`
			}
			if err := cur.Decode(&d); err != nil {
				return err
			}
			if d.User == "" || d.Conv == "" {
				continue
			}
			id := convListID(d.User, d.Conv)
			lists[id], owner[id] = append(lists[id], d.Conv), d.User
			if n++; len(lists) >= 1000 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := cur.Err(); err != nil {
			return err
		}
		if err := flush(); err != nil {
			return err
		}
		if n > 0 {
			s.log.Info().Int("entries", n).Msg("users' conversations indexed by _id")
		}
		return nil
	})
	if err != nil {
		return err
	}
	return buildOnce(ctx, s.csVisitors, func(ctx context.Context) error {
		cur, err := s.cs.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "visitor", Value: 1}, {Key: "n", Value: 1}}))
		if err != nil {
			return err
		}
		var docs []csDoc
		if err := cur.All(ctx, &docs); err != nil {
			return err
		}
		last := map[string]int64{}
		for _, d := range docs {
			last[d.Visitor] = max(last[d.Visitor], d.N)
		}
		for v, n := range last {
			if err := s.raiseLastConv(ctx, v, n); err != nil {
				return err
			}
		}
		if len(last) > 0 {
			s.log.Info().Int("visitors", len(last)).Msg("visitors' support conversations indexed by _id")
		}
		return nil
	})
}

// putToken records that the token hashing to hash is visitor's.
func (s *Store) putToken(ctx context.Context, hash, visitor string) error {
	_, err := s.tokens.ReplaceOne(ctx, bson.D{{Key: "_id", Value: hash}}, tokenDoc{Hash: hash, Visitor: visitor},
		options.Replace().SetUpsert(true))
	return err
}

// lastConvs remembers, per visitor, the highest conversation number this
// Store has made support_visitors hold, so that only a new conversation
// costs a write (bounded).
type lastConvs struct {
	mu sync.Mutex
	n  map[string]int64
}

const maxLastCached = 100_000

func (l *lastConvs) has(visitor string, n int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[visitor] >= n
}

func (l *lastConvs) put(visitor string, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil || len(l.n) >= maxLastCached {
		l.n = map[string]int64{}
	}
	l.n[visitor] = max(l.n[visitor], n)
}

// raiseLastConv makes support_visitors hold at least n as visitor's
// highest conversation number.
func (s *Store) raiseLastConv(ctx context.Context, visitor string, n int64) error {
	if s.last.has(visitor, n) {
		return nil
	}
	_, err := s.csVisitors.UpdateOne(ctx, bson.D{{Key: "_id", Value: visitor}},
		bson.D{{Key: "$max", Value: bson.D{{Key: "last", Value: n}}}}, options.UpdateOne().SetUpsert(true))
	if err != nil {
		return err
	}
	s.last.put(visitor, n)
	return nil
}

// lastConv is visitor's highest conversation number, 0 for none.
func (s *Store) lastConv(ctx context.Context, visitor string) (int64, error) {
	return numberByID(ctx, s.csVisitors, visitor, "last")
}

// numberByID reads the number field of coll's document id: 0 when there
// is no such document (or it has no such number).
func numberByID(ctx context.Context, coll *mongo.Collection, id, field string) (int64, error) {
	var d bson.M
	err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&d)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return 0, nil
	case err != nil:
		return 0, err
	}
	switch n := d[field].(type) {
	case int64:
		return n, nil
	case int32:
		return int64(n), nil
	case float64:
		return int64(n), nil
	}
	return 0, nil
}
