package history

import "context"

// Drop removes the Store's database. Tests use it to clean up.
func (s *Store) Drop(ctx context.Context) error { return s.users.Database().Drop(ctx) }
