package node

import (
	"net"
	"strings"
	"testing"

	"chatcluster/internal/redisconn"
)

// validConfig is a Config that passes Validate, on loopback.
func validConfig() Config {
	cfg := DefaultConfig()
	cfg.ID, cfg.Listen, cfg.PeerListen = "n1", "127.0.0.1:9001", "127.0.0.1:9101"
	cfg.ZK, cfg.Redis, cfg.Mongo = []string{"127.0.0.1:2181"}, redisconn.Config{Addr: "127.0.0.1:6379"}, "mongodb://127.0.0.1:27017/"
	cfg.Secret = []byte("0123456789abcdef")
	return cfg
}

// A node publishes what others can dial: the bound addresses by default,
// the advertised ones when given, and it refuses to start, naming the flag
// to set, when what it would publish is a wildcard or has no host.
func TestConfigAdvertisedAddresses(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		listen, advertise     string
		peer, peerAdvertise   string
		wantWS, wantPeer, err string // err "" when valid
	}{
		{name: "loopback defaults", listen: "127.0.0.1:9001", peer: "127.0.0.1:9101",
			wantWS: "ws://127.0.0.1:9001/ws", wantPeer: "127.0.0.1:9101"},
		{name: "an address of the host", listen: "10.1.2.3:9001", peer: "10.1.2.3:9101",
			wantWS: "ws://10.1.2.3:9001/ws", wantPeer: "10.1.2.3:9101"},
		{name: "IPv6 bind", listen: "[fd00::5]:9001", peer: "[fd00::5]:9101",
			wantWS: "ws://[fd00::5]:9001/ws", wantPeer: "[fd00::5]:9101"},
		{name: "wildcard binds with advertised addresses", listen: "0.0.0.0:9001", advertise: "ws://host-a:9001/ws",
			peer: "0.0.0.0:9101", peerAdvertise: "host-a:9101", wantWS: "ws://host-a:9001/ws", wantPeer: "host-a:9101"},
		{name: "advertised URL behind a TLS proxy", listen: "[::]:9001", advertise: "wss://chat.example.com/ws",
			peer: ":9101", peerAdvertise: "10.0.0.7:9101", wantWS: "wss://chat.example.com/ws", wantPeer: "10.0.0.7:9101"},

		{name: "0.0.0.0 client bind, no advertise", listen: "0.0.0.0:9001", peer: "10.0.0.7:9101",
			err: `--listen "0.0.0.0:9001" binds every address, so it gives no URL to publish: set --advertise`},
		{name: "empty client host, no advertise", listen: ":9001", peer: "10.0.0.7:9101", err: "set --advertise"},
		{name: ":: client bind, no advertise", listen: "[::]:9001", peer: "10.0.0.7:9101", err: "set --advertise"},
		{name: "0.0.0.0 peer bind, no peer advertise", listen: "10.0.0.7:9001", peer: "0.0.0.0:9101",
			err: `--peer-listen "0.0.0.0:9101" binds every address, so it gives no address to publish: set --peer-advertise`},
		{name: "empty peer host, no peer advertise", listen: "10.0.0.7:9001", peer: ":9101", err: "set --peer-advertise"},
		{name: ":: peer bind, no peer advertise", listen: "10.0.0.7:9001", peer: "[::]:9101", err: "set --peer-advertise"},

		{name: "advertise a wildcard", listen: "0.0.0.0:9001", advertise: "ws://0.0.0.0:9001/ws", peer: "10.0.0.7:9101",
			err: `--advertise "ws://0.0.0.0:9001/ws" names no host clients can dial`},
		{name: "advertise ::", listen: "0.0.0.0:9001", advertise: "ws://[::]:9001/ws", peer: "10.0.0.7:9101", err: "names no host clients can dial"},
		{name: "advertise no host", listen: "0.0.0.0:9001", advertise: "ws://:9001/ws", peer: "10.0.0.7:9101", err: "names no host clients can dial"},
		{name: "advertise port 0", listen: "0.0.0.0:9001", advertise: "ws://host-a:0/ws", peer: "10.0.0.7:9101", err: `port "0" is not one clients can dial`},
		{name: "advertise http", listen: "10.0.0.7:9001", advertise: "http://host-a:9001/ws", peer: "10.0.0.7:9101", err: "must be a ws:// or wss:// URL"},
		{name: "peer advertise a wildcard", listen: "10.0.0.7:9001", peer: "0.0.0.0:9101", peerAdvertise: "0.0.0.0:9101",
			err: `--peer-advertise "0.0.0.0:9101" names no host the other nodes can dial`},
		{name: "peer advertise no host", listen: "10.0.0.7:9001", peer: "0.0.0.0:9101", peerAdvertise: ":9101", err: "names no host the other nodes can dial"},
		{name: "peer advertise ::", listen: "10.0.0.7:9001", peer: "0.0.0.0:9101", peerAdvertise: "[::]:9101", err: "names no host the other nodes can dial"},
		{name: "peer advertise no port", listen: "10.0.0.7:9001", peer: "0.0.0.0:9101", peerAdvertise: "host-a", err: "must be host:port"},
		{name: "peer advertise port 0", listen: "10.0.0.7:9001", peer: "0.0.0.0:9101", peerAdvertise: "host-a:0", err: `port "0" is not one the other nodes can dial`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			cfg.Listen, cfg.Advertise, cfg.PeerListen, cfg.PeerAdvertise = tc.listen, tc.advertise, tc.peer, tc.peerAdvertise
			err := cfg.Validate()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Advertise != tc.wantWS || cfg.PeerAdvertise != tc.wantPeer {
				t.Fatalf("publishes %q and %q, want %q and %q", cfg.Advertise, cfg.PeerAdvertise, tc.wantWS, tc.wantPeer)
			}
		})
	}
}

// A derived address whose listen port is 0 publishes the port the kernel
// picked; one given explicitly is published as given.
func TestConfigPublishesBoundPort(t *testing.T) {
	cfg := validConfig()
	cfg.Listen, cfg.PeerListen = "127.0.0.1:0", "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.publish(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40001}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40002})
	if cfg.Advertise != "ws://127.0.0.1:40001/ws" || cfg.PeerAdvertise != "127.0.0.1:40002" {
		t.Fatalf("publishes %q and %q after binding ports 40001 and 40002", cfg.Advertise, cfg.PeerAdvertise)
	}

	cfg = validConfig()
	cfg.Listen, cfg.PeerListen = "0.0.0.0:0", "0.0.0.0:0"
	cfg.Advertise, cfg.PeerAdvertise = "ws://host-a:9001/ws", "host-a:9101"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.publish(&net.TCPAddr{Port: 40001}, &net.TCPAddr{Port: 40002})
	if cfg.Advertise != "ws://host-a:9001/ws" || cfg.PeerAdvertise != "host-a:9101" {
		t.Fatalf("an advertised address changed when the port was bound: %q and %q", cfg.Advertise, cfg.PeerAdvertise)
	}
}
