package handler

import (
	"errors"

	"chatcluster/protocol"
)

// ClientError is the error a client is told for err, an error of a
// dependency or of an action, as Handle would reply it: its code, reason
// and data. An error it does not know is 500 "internal error", so store
// errors never reach a client. For the server API, which runs the
// node's requests to the leader and answers over HTTP.
func ClientError(err error) *protocol.Error {
	var pe *protocol.Error
	if errors.As(clientError(err), &pe) {
		return pe
	}
	return &protocol.Error{Code: protocol.CodeInternal, Msg: "internal error"}
}
