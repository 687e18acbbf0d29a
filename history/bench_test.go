package history_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"chatcluster/history"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
	"chatcluster/support"
)

// The write benchmarks run against a private mongostore (testenv.StartMongo)
// so that its CPU time, read from /proc, is the store's cost of what was
// measured alone; they report it per message as store-µs/msg, beside the
// benchmark process's own CPU per message (client-µs/msg: the writer or
// the Store's client side). CPU per message, unlike time, compares across
// runs on a shared machine.

// procCPU returns the CPU time process pid has used so far.
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("cannot read the CPU time of %d from %q", pid, s)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick
}

// selfCPU returns the CPU time this process has used so far.
func selfCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter reports CPU per message of the store process and of this one.
type cpuMeter struct {
	tb          testing.TB
	pid         int
	store, self time.Duration
}

func startCPU(tb testing.TB, pid int) *cpuMeter {
	return &cpuMeter{tb: tb, pid: pid, store: procCPU(tb, pid), self: selfCPU(tb)}
}

func (c *cpuMeter) report(b *testing.B, msgs int) {
	store, self := procCPU(c.tb, c.pid)-c.store, selfCPU(c.tb)-c.self
	b.ReportMetric(float64(store.Microseconds())/float64(msgs), "store-µs/msg")
	b.ReportMetric(float64(self.Microseconds())/float64(msgs), "client-µs/msg")
}

// privateStore opens a Store on a mongostore of the benchmark's own and
// returns it with the server's pid.
func privateStore(b *testing.B) (*history.Store, int) {
	b.Helper()
	m := testenv.StartMongo(b)
	return openStoreAt(b, m.URI(), testenv.Namespace(b)), m.Pid()
}

// BenchmarkUpsert measures the Store's write path alone: b.N messages over
// convs conversations, written in calls of batch messages, as the writer
// makes them under load.
func BenchmarkUpsert(b *testing.B) {
	for _, tc := range []struct{ convs, batch int }{{100, 2000}, {1000, 2000}, {100, 500}} {
		b.Run(fmt.Sprintf("convs=%d/batch=%d", tc.convs, tc.batch), func(b *testing.B) {
			s, pid := privateStore(b)
			ctx := context.Background()
			msgs := makeMessages(b.N, tc.convs, "u")
			b.ReportAllocs()
			cpu := startCPU(b, pid)
			b.ResetTimer()
			for lo := 0; lo < len(msgs); lo += tc.batch {
				if err := s.UpsertMessages(ctx, msgs[lo:min(lo+tc.batch, len(msgs))]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu.report(b, b.N)
		})
	}
}

// BenchmarkWriter measures how fast one writer moves messages from the
// stream into MongoDB: b.N messages over 100 conversations are appended,
// then the clock runs until the backlog is empty.
func BenchmarkWriter(b *testing.B) {
	for _, batch := range []int{500, 2000, 5000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			ns := testenv.Namespace(b)
			prefix := ns + ":"
			ctx := context.Background()
			rdb := redisClient(b, testenv.Redis(b), prefix)
			s, pid := privateStore(b)
			msgs := makeMessages(b.N, 100, "p")
			appendMessages(b, rdb, prefix, msgs)

			b.ReportAllocs()
			cpu := startCPU(b, pid)
			b.ResetTimer()
			start := time.Now()
			w, stop := runWriter(b, history.WriterConfig{
				Redis: rdb, Prefix: prefix, Store: s, Consumer: "bench", Batch: batch,
				Block: 20 * time.Millisecond, Logger: zerolog.Nop(),
			})
			testenv.WaitFor(b, 10*time.Minute, "backlog written", func() bool {
				n, err := w.Backlog(ctx)
				return err == nil && n == 0
			})
			elapsed := time.Since(start)
			b.StopTimer()
			cpu.report(b, b.N)
			stop()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
		})
	}
}

// BenchmarkNewest measures reading a conversation's newest page (what a
// history request does when Redis does not cover it) in a store holding
// 100,000 messages over 100 conversations, written as the writer would.
func BenchmarkNewest(b *testing.B) {
	s, pid := privateStore(b)
	ctx := context.Background()
	const convs = 100
	msgs := makeMessages(100_000, convs, "n")
	for lo := 0; lo < len(msgs); lo += 2000 {
		if err := s.UpsertMessages(ctx, msgs[lo:lo+2000]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	cpu := startCPU(b, pid)
	b.ResetTimer()
	for i := range b.N {
		conv := fmt.Sprintf("room:n%d", i%convs)
		got, err := s.Messages(ctx, conv, 0, 901, 50, true)
		if err != nil || len(got) != 50 || got[49].Seq != 900 {
			b.Fatalf("read %d messages (%v), want 50 up to 900", len(got), err)
		}
	}
	b.StopTimer()
	store := procCPU(b, pid) - cpu.store
	b.ReportMetric(float64(store.Microseconds())/float64(b.N), "store-µs/op")
}

// BenchmarkLookups measures the lookups of a customer-service visitor's
// requests (its login by token, a change of its conversation written by
// the leader, its conversation list) in a store that holds n visitors, each
// with a conversation, as a day of customer service leaves it. Their cost
// must not grow with n: the embedded store finds a document without a
// scan only by _id.
func BenchmarkLookups(b *testing.B) {
	for _, n := range []int{100, 2000} {
		s, pid := privateStore(b)
		ctx := context.Background()
		hashes := make([]string, n)
		convs := make([]support.Conv, n)
		var msgs []protocol.Message
		for i := range n {
			id := fmt.Sprintf("~v%07d", i)
			hashes[i] = fmt.Sprintf("hash%07d", i)
			if err := s.CreateVisitor(ctx, id, hashes[i], "", "web"); err != nil {
				b.Fatal(err)
			}
			convs[i] = support.OpenNew(id, "", "web", 0, int64(i))
			if err := s.SaveSupportConv(ctx, convs[i], 1); err != nil {
				b.Fatal(err)
			}
			msgs = append(msgs, protocol.Message{ID: fmt.Sprintf("m%d", i), Conv: convs[i].ID, Seq: 1,
				From: id, To: "agent", Text: "hello", TS: int64(i)})
		}
		for lo := 0; lo < len(msgs); lo += 500 {
			if err := s.UpsertMessages(ctx, msgs[lo:min(lo+500, len(msgs))]); err != nil {
				b.Fatal(err)
			}
		}
		run := func(name string, op func(i int) error) {
			b.Run(fmt.Sprintf("%s/visitors=%d", name, n), func(b *testing.B) {
				cpu := startCPU(b, pid)
				b.ResetTimer()
				for i := range b.N {
					if err := op(i % n); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				store := procCPU(b, pid) - cpu.store
				b.ReportMetric(float64(store.Microseconds())/float64(b.N), "store-µs/op")
			})
		}
		run("VisitorByToken", func(i int) error {
			id, _, _, err := s.VisitorByToken(ctx, hashes[i])
			if err == nil && id != convs[i].Visitor {
				err = fmt.Errorf("token %d gave %s", i, id)
			}
			return err
		})
		run("SaveSupportConv", func(i int) error { return s.SaveSupportConv(ctx, convs[i], 1) })
		run("VisitorConvs", func(i int) error {
			got, err := s.VisitorConvs(ctx, convs[i].Visitor, 5)
			if err == nil && len(got) != 1 {
				err = fmt.Errorf("visitor %d has %d conversations, want 1", i, len(got))
			}
			return err
		})
		run("DirectConvs", func(i int) error {
			got, err := s.DirectConvs(ctx, convs[i].Visitor)
			if err == nil && len(got) != 1 {
				err = fmt.Errorf("visitor %d is in %v, want 1 conversation", i, got)
			}
			return err
		})
	}
}
