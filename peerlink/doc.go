// Package peerlink is the authenticated transport between nodes: the
// WebSocket link a leader opens to every node, with the handshake that
// authenticates both ends, and the link's bounded queue, batched write
// loop, read loop and acknowledgements.
//
// The handshake: the leader (Dial) proves it knows the cluster secret by
// an HMAC over its id, the target's id, its epoch, the time and a nonce;
// the node (Acceptor) checks the proof, the clock skew and that the nonce
// is new, and answers with its own proof over the nonce, which Dial
// checks. A Link then carries encoded protocol.PeerFrame bytes one way
// and the other. A link the leader dialled acknowledges, every 50 ms, the
// highest numbered frame the leader handled (Link.SetHandled), with
// whether the leader is overloaded.
//
// With a TLS (LoadTLS) the link is mutual TLS as well: the node's peer
// listener (Listen) requires a certificate of the cluster's CA, and Dial
// checks the node's certificate against the CA and the address dialled.
// One end with TLS and the other without fail to link, with an error at
// the dialling end and a log line at the accepting one; the handshake
// over the cluster secret is the same either way (tls.go).
//
// Calls (call.go) are plain HTTP requests to the peer listener, as the
// gateway makes them for the server API: signed over the cluster secret
// like the handshake (SignCall, Acceptor.VerifyCall), and answered with
// the node's proof (Acceptor.SignAnswer, VerifyAnswer).
//
// It does not decide whom to link to or whether a leader is the right
// one: that a dialling leader's epoch is current and that ZooKeeper names
// it is the node's check, made between Acceptor.Verify and
// Acceptor.Accept. It does not read what the frames say, beyond decoding
// them for the reader; routing, resending and fencing by epoch belong to
// the node and the leader packages. It starts no goroutine: the owner of a
// link runs its WriteLoop and ReadLoop on goroutines it owns.
package peerlink
