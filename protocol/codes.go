package protocol

import "fmt"

// Reply codes. They follow HTTP where a meaning exists so that clients can
// treat them alike.
const (
	CodeOK           = 0
	CodeBadRequest   = 400 // malformed frame, unknown action, missing or wrong-typed field
	CodeUnauthorized = 401 // not logged in, bad credentials, expired token
	CodeForbidden    = 403 // not allowed (peer action on the client port, not a room member)
	CodeNotFound     = 404 // unknown user, room or conversation
	CodeConflict     = 409 // name already taken
	CodeTooLarge     = 413 // text or frame over its limit
	CodeRateLimited  = 429 // too many requests
	CodeInternal     = 500 // a bug or an unexpected store error
	CodeUnavailable  = 503 // a dependency the action needs is down; retry later
)

// Error is an error meant for a client: a code and a human readable reason.
// Handlers return it; only the connection layer turns it into a reply frame.
// Data, when set, is sent as the reply's data (a 429 of a login carries
// RetryData); most errors have none.
type Error struct {
	Code int
	Msg  string
	Data any
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Code, e.Msg) }

// Errorf returns an *Error with code and a formatted reason.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}
