package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Client actions.
const (
	ActionLogin    = "login"
	ActionChat     = "chat"
	ActionHistory  = "history"
	ActionSync     = "sync"
	ActionUserInfo = "userInfo"
	ActionPing     = "ping"
	ActionJoin     = "joinRoom"
	ActionLeave    = "leaveRoom"
	ActionRooms    = "rooms"
	ActionPopular  = "popular"
	ActionRebuild  = "rebuild"
	ActionTyping   = "typing"
	ActionRead     = "read"
	ActionEdit     = "edit"
	ActionRecall   = "recall"
)

// Server pushes.
const (
	PushMessage  = "message"
	PushKicked   = "kicked"
	PushPresence = "presence"
	PushNode     = "node"
	PushTyping   = "typing"
	PushRead     = "read"
	PushMember   = "member"
)

// Request is a client frame: {"action", "id", "data"}.
type Request struct {
	Action string          `json:"action"`
	ID     string          `json:"id,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	// Chat is the data of a chat request, when DecodeRequest could read it
	// in the same pass as the envelope; nil otherwise (decode Data then).
	Chat *ChatData `json:"-"`
}

// Reply answers a Request. An error reply (code not CodeOK) has no data,
// except where an error carries some (the RetryData of a throttled login).
type Reply struct {
	Action string `json:"action"`
	ID     string `json:"id,omitempty"`
	Code   int    `json:"code"`
	Data   any    `json:"data,omitempty"`
	Error  string `json:"error,omitempty"`
	// Cause is what made a request fail on the server's side (a store
	// error behind a 503, for one): for the server's log, never sent.
	Cause error `json:"-"`
}

// Push is a server-initiated frame; it has no id.
type Push struct {
	Action string `json:"action"`
	Data   any    `json:"data"`
}

// DecodeRequest parses one client frame. On failure it returns an *Error
// with CodeBadRequest and, as far as it could be read, the request's action
// and id so the reply can still be matched by the client.
func DecodeRequest(b []byte) (Request, error) {
	if len(b) > MaxFrameSize {
		return Request{}, Errorf(CodeTooLarge, "frame of %d bytes is over the limit of %d", len(b), MaxFrameSize)
	}
	if req, ok := decodeFastRequest(b); ok {
		return req, nil
	}
	return decodeRequestJSON(b)
}

// decodeRequestJSON is DecodeRequest by encoding/json: for every frame
// the fast reader leaves, the malformed ones included, whose errors it
// words.
func decodeRequestJSON(b []byte) (Request, error) {
	var req Request
	// Only JSON's own white space: a frame led by any other (U+00A0, say)
	// is not JSON.
	b = bytes.Trim(b, " \t\r\n")
	if len(b) == 0 || b[0] != '{' {
		return req, Errorf(CodeBadRequest, "frame is not a JSON object")
	}
	var raw struct {
		Action json.RawMessage `json:"action"`
		ID     json.RawMessage `json:"id"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return req, Errorf(CodeBadRequest, "malformed JSON: %s", jsonReason(err))
	}
	// Read id first so that even a bad action can be answered by id.
	if len(raw.ID) > 0 && !isNull(raw.ID) {
		if err := json.Unmarshal(raw.ID, &req.ID); err != nil {
			return req, Errorf(CodeBadRequest, "id must be a string")
		}
		if len(req.ID) > MaxIDLen {
			id := req.ID
			req.ID = ""
			return req, Errorf(CodeBadRequest, "id of %d bytes is over the limit of %d", len(id), MaxIDLen)
		}
	}
	if len(raw.Action) == 0 || isNull(raw.Action) {
		return req, Errorf(CodeBadRequest, "action is missing")
	}
	if err := json.Unmarshal(raw.Action, &req.Action); err != nil {
		return req, Errorf(CodeBadRequest, "action must be a string")
	}
	if req.Action == "" {
		return req, Errorf(CodeBadRequest, "action is empty")
	}
	if len(raw.Data) > 0 && !isNull(raw.Data) {
		if raw.Data[0] != '{' {
			return req, Errorf(CodeBadRequest, "data must be an object")
		}
		req.Data = raw.Data
	}
	return req, nil
}

// DecodeData unmarshals a request's data into v, rejecting unknown fields'
// wrong types with a CodeBadRequest *Error that names the field.
// Absent data decodes as an empty object.
func DecodeData(data json.RawMessage, v any) error {
	if len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return Errorf(CodeBadRequest, "bad data: %s", jsonReason(err))
	}
	return nil
}

// EncodeReply encodes a reply frame.
func EncodeReply(r Reply) ([]byte, error) {
	if b, ok := appendChatReply(make([]byte, 0, 128+len(r.ID)), &r); ok {
		return b, nil
	}
	if b, ok := appendReceiptReply(make([]byte, 0, 96+len(r.ID)), &r); ok {
		return b, nil
	}
	return json.Marshal(r)
}

// EncodePush encodes a push frame. The bytes may be shared read-only by
// every recipient.
func EncodePush(action string, data any) ([]byte, error) {
	return json.Marshal(Push{Action: action, Data: data})
}

// ReplyError builds the reply for a failed request. Errors that are not an
// *Error become CodeInternal with a generic reason, so store errors never
// leak to clients.
func ReplyError(action, id string, err error) Reply {
	var pe *Error
	if errors.As(err, &pe) {
		return Reply{Action: action, ID: id, Code: pe.Code, Error: pe.Msg, Data: pe.Data}
	}
	return Reply{Action: action, ID: id, Code: CodeInternal, Error: "internal error"}
}

func isNull(b json.RawMessage) bool { return string(b) == "null" }

// jsonReason makes encoding/json's error readable without Go type names.
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("field %q must be %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return fmt.Sprintf("expected %s, not %s", jsonKind(te.Type.Kind().String()), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	return err.Error()
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "int", "int64", "int32", "uint64", "float64":
		return "a number"
	case "bool":
		return "a boolean"
	case "map", "struct":
		return "an object"
	case "slice":
		return "an array"
	}
	return k
}
