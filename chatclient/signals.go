package chatclient

import (
	"context"

	"chatcluster/protocol"
)

// Read marks conv read up to and including seq; the reply is the read
// position now stored, which is never lower than before (a lower seq
// changes nothing).
func (c *Conn) Read(ctx context.Context, conv string, seq int64) (protocol.ReadReply, error) {
	var r protocol.ReadReply
	err := c.Do(ctx, protocol.ActionRead, protocol.ReadData{Conv: conv, Seq: seq}, &r)
	return r, err
}

// Typing tells the other members of conv who are online that the user is
// typing in it. Nothing is stored, and the push is best-effort.
func (c *Conn) Typing(ctx context.Context, conv string) error {
	return c.Do(ctx, protocol.ActionTyping, protocol.TypingData{Conv: conv}, nil)
}
