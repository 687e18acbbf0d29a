// Package apikey holds the operators' keys of the gateway's server API:
// it reads them from a file of one named key a line, keeps only their
// SHA-256 sums, finds the key a request presents in constant time
// (Keys.Match), and limits each key's request rate (Limiter).
//
// The file:
//
//	# name   key
//	modbot   Zt3m9L0bVQ2hR6pX8yK4wN1c
//	alerts   3kd9X2mQ7vB5nL8pR1tY6wZ0
//
// A name is 1 to 64 letters, digits, '_', '-' or '.'; a key 16 to 256
// printable ASCII characters without spaces. Blank lines and lines
// starting with '#' are skipped. Names and keys are unique.
package apikey
