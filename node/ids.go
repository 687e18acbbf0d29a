package node

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"time"
)

// idSource hands out message and connection ids: the time in base 36 and
// 8 random bytes. The bytes come from crypto/rand, read idBatch at a time:
// one read is a system call, and a message id is made for every message.
// The zero value is ready; safe for concurrent use.
type idSource struct {
	mu     sync.Mutex
	buf    [idBatch]byte
	off    int  // bytes of buf handed out since it was read
	filled bool // buf was read once
}

// idBatch is how many random bytes one read takes: the ids of 64 messages.
const idBatch = 512

// next returns a new id: time-ordered to the millisecond, unique.
func (s *idSource) next() string {
	var b [8]byte
	s.mu.Lock()
	if !s.filled || s.off+len(b) > len(s.buf) {
		_, _ = rand.Read(s.buf[:]) // never fails (crypto/rand)
		s.off, s.filled = 0, true
	}
	copy(b[:], s.buf[s.off:])
	s.off += len(b)
	s.mu.Unlock()
	return strconv.FormatInt(time.Now().UnixMilli(), 36) + "-" + hex.EncodeToString(b[:])
}
