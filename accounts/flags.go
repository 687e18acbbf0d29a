package accounts

import "chatcluster/internal/flagenv"

// ThrottleFlags defines the flags (and environment variables) of the
// login throttle on fs, with def as their defaults, for the gateway and the
// node alike. The returned function gives the configuration once fs is
// parsed.
func ThrottleFlags(fs *flagenv.Set, def ThrottleConfig) func() ThrottleConfig {
	free := fs.Int("login-free-failures", "CHAT_LOGIN_FREE_FAILURES", def.FreeFailures,
		"failed password logins of one account that cost no wait")
	freeAddr := fs.Int("login-free-failures-addr", "CHAT_LOGIN_FREE_FAILURES_ADDR", def.FreeFailuresAddr,
		"failed password logins from one source address (an IPv6 /64) that cost no wait")
	backoff := fs.Duration("login-backoff", "CHAT_LOGIN_BACKOFF", def.Backoff,
		"wait after the first failed login past the free ones, doubling with each further one (0: no throttling)")
	maxBackoff := fs.Duration("login-backoff-max", "CHAT_LOGIN_BACKOFF_MAX", def.MaxBackoff,
		"longest wait between password logins of a throttled account or address")
	forget := fs.Duration("login-forget", "CHAT_LOGIN_FORGET", def.Forget,
		"how long after its last wait ended a failed-login counter is forgotten")
	return func() ThrottleConfig {
		return ThrottleConfig{FreeFailures: *free, FreeFailuresAddr: *freeAddr, Backoff: *backoff, MaxBackoff: *maxBackoff, Forget: *forget}
	}
}
