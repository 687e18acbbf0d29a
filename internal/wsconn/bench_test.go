package wsconn

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// BenchmarkWriter writes 200-byte frames over a loopback TCP WebSocket, in
// batches of 1 and 64 frames between Cork and Flush, and unbatched (every
// frame its own write, as gorilla/websocket alone does), while the other
// end reads them. It reports the frames delivered per second and the
// writes made per frame.
func BenchmarkWriter(b *testing.B) {
	for _, bc := range []struct {
		name  string
		batch int
		cork  bool
	}{
		{"frames=1", 1, true},
		{"frames=64", 64, true},
		{"frames=64/unbatched", 64, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := newPair(b, NewBuffers(16<<10))
			msg := frame(0, 200)
			read := make(chan error, 1)
			go func() {
				for range b.N {
					_, r, err := p.cli.NextReader()
					if err == nil {
						_, err = io.Copy(io.Discard, r)
					}
					if err != nil {
						read <- fmt.Errorf("reading: %w", err)
						return
					}
				}
				read <- nil
			}()
			before := p.w.Writes()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; {
				if bc.cork {
					p.w.Cork()
				}
				for end := min(i+bc.batch, b.N); i < end; i++ {
					_ = p.srv.SetWriteDeadline(time.Now().Add(time.Minute))
					if err := p.srv.WriteMessage(websocket.TextMessage, msg); err != nil {
						b.Fatal(err)
					}
				}
				if err := p.w.Flush(time.Now().Add(time.Minute)); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-read; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "frames/s")
			b.ReportMetric(float64(p.w.Writes()-before)/float64(b.N), "writes/frame")
		})
	}
}
