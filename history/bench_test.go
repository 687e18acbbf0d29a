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
