package wsconn

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"chatcluster/internal/testenv"
)

// Under TLS the Conn sits below the encryption: Of finds it under the
// *tls.Conn, and a batch of sealed frames leaves in one write.
func TestBatchUnderTLS(t *testing.T) {
	ca := testenv.NewCA(t, "wsconn")
	certFile, keyFile := ca.Issue(t, "server", "127.0.0.1")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var raw *counted
	tln := tls.NewListener(countingListener{Listener: ln, bufs: NewBuffers(64 << 10), made: func(c *counted) { raw = c }},
		&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	got := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			t.Error("the HTTP server does not see the TLS connection")
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		got <- ws
	})}
	served := make(chan struct{})
	go func() { defer close(served); _ = hs.Serve(tln) }()
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}
	cli, _, err := d.Dial("wss://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := <-got
	t.Cleanup(func() {
		cli.Close()
		srv.Close()
		_ = hs.Close()
		<-served
	})
	w := Of(srv.NetConn())
	if w == nil {
		t.Fatal("Of does not find the Conn under the TLS connection")
	}
	const n = 64
	before := raw.writes.Load()
	w.Cork()
	for i := range n {
		if err := srv.WriteMessage(websocket.TextMessage, frame(i, 200)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := raw.writes.Load() - before; got != 1 {
		t.Fatalf("%d writes for a batch of %d frames under TLS, want 1", got, n)
	}
	if err := readFrames(cli, n, func(i int) []byte { return frame(i, 200) }); err != nil {
		t.Fatal(err)
	}
}
