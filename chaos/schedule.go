package chaos

import "math/rand/v2"

// Fault is a kind of fault the run injects.
type Fault int

const (
	KillLeader   Fault = iota // kill -9 of the leader node
	KillFollower              // kill -9 of a node that is not the leader
	PauseLeader               // SIGSTOP of the leader past the ZooKeeper session timeout, then SIGCONT
	RestartRedis              // Redis killed and started again, empty
	StopMongo                 // MongoDB stopped, then started again
	KillZKServer              // one server of the 3-server ZooKeeper ensemble killed, then started again
)

// Faults lists every kind of fault, in table order.
var Faults = []Fault{KillLeader, KillFollower, PauseLeader, RestartRedis, StopMongo, KillZKServer}

func (f Fault) String() string {
	switch f {
	case KillLeader:
		return "kill -9 leader"
	case KillFollower:
		return "kill -9 follower"
	case PauseLeader:
		return "SIGSTOP leader"
	case RestartRedis:
		return "Redis restart"
	case StopMongo:
		return "MongoDB stop and start"
	case KillZKServer:
		return "ZooKeeper server kill"
	}
	return "unknown fault"
}

// Key is the fault's short name, as CHAT_CHAOS_FAULTS takes it.
func (f Fault) Key() string {
	switch f {
	case KillLeader:
		return "kill-leader"
	case KillFollower:
		return "kill-follower"
	case PauseLeader:
		return "pause-leader"
	case RestartRedis:
		return "redis"
	case StopMongo:
		return "mongo"
	case KillZKServer:
		return "zk"
	}
	return "unknown"
}

// Only keeps the faults of schedule whose Key is in keys, in order.
func Only(schedule []Fault, keys []string) []Fault {
	var out []Fault
	for _, f := range schedule {
		for _, k := range keys {
			if f.Key() == k {
				out = append(out, f)
				break
			}
		}
	}
	return out
}

// Schedule returns the order of the faults of a run: rounds rounds, each
// one of every kind in an order drawn from seed, so that a run can be
// repeated.
func Schedule(rounds int, seed int64) []Fault {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6368616f73)) // "chaos"
	out := make([]Fault, 0, rounds*len(Faults))
	for range rounds {
		round := append([]Fault(nil), Faults...)
		rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		out = append(out, round...)
	}
	return out
}
