// Package keypair loads the TLS certificates of the node and the gateway
// from PEM files: a certificate chain with its key, and the certificates
// of a certificate authority to verify others by. A Pair can be loaded
// again (on SIGHUP), so that a renewed certificate takes effect for new
// connections without a restart; if the new files do not load, the old
// certificate stays in use.
package keypair
