package protocol

import "encoding/json"

// Peer frame types, exchanged between nodes on the peer listener only. A
// client connection can never send them: the client port decodes only
// client actions.
const (
	PeerHello   = "hello"   // leader -> node: I lead with this epoch
	PeerLoad    = "load"    // node -> leader: my connection count
	PeerRoute   = "route"   // node -> leader: deliver Message to Users on node Dest
	PeerDeliver = "deliver" // leader -> node: deliver Message to local Users
	PeerKick    = "kick"    // node -> leader -> node: close User's connection Conn
)

// PeerFrame is one frame of the peer link. Epoch is the sending leader's
// epoch on frames a leader sends, and the epoch of the leader the node
// believes in on frames a node sends; a receiver refuses frames whose epoch
// is older than the newest it has seen.
type PeerFrame struct {
	Type        string   `json:"type"`
	Epoch       int64    `json:"epoch"`
	From        string   `json:"from"`
	Dest        string   `json:"dest,omitempty"`
	Users       []string `json:"users,omitempty"`
	Message     *Message `json:"message,omitempty"`
	Conn        string   `json:"conn,omitempty"`
	Connections int      `json:"connections,omitempty"`
	Started     int64    `json:"started,omitempty"` // node start, unix ms, on load frames
}

// EncodePeer encodes a peer frame.
func EncodePeer(f *PeerFrame) ([]byte, error) { return json.Marshal(f) }

// DecodePeer decodes a peer frame.
func DecodePeer(b []byte) (PeerFrame, error) {
	var f PeerFrame
	if len(b) > MaxPeerFrame {
		return f, Errorf(CodeTooLarge, "peer frame of %d bytes is over the limit", len(b))
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, Errorf(CodeBadRequest, "malformed peer frame: %s", jsonReason(err))
	}
	if f.Type == "" {
		return f, Errorf(CodeBadRequest, "peer frame without type")
	}
	return f, nil
}
