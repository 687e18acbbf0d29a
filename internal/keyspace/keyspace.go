// Package keyspace places the message journal's Redis keys so that it runs
// on one Redis server and on a Redis Cluster alike.
//
// A Redis Cluster keeps each key in one of 16384 slots, and a script or a
// transaction may only touch keys of one slot. Every key of a conversation
// (counter, recent list, pending hash), the history stream it is written
// to, and the idempotency records of its senders are therefore put under
// one hash tag, the tag of the conversation's shard: Shards tags, each
// hashing into its own equal part of the slot range, so that the default
// slot assignment of a cluster (equal contiguous ranges per master)
// spreads the journal evenly over the masters, and no one stream or key
// takes every message.
//
// A conversation's shard is a hash of its id modulo Shards, fixed forever:
// changing Shards would move counters, so it is part of the stored layout.
package keyspace

import (
	"hash/fnv"
	"strconv"
	"strings"
)

// Shards is how many parts the journal is cut into: as many history
// streams, each with its consumer group. It bounds how many cluster
// masters share the journal's load.
const Shards = 32

// Slots is the number of Redis Cluster hash slots.
const Slots = 16384

// Tags are the hash tags of the shards, "{...}" included: tag i hashes into
// slots [i*Slots/Shards, (i+1)*Slots/Shards). They are computed, not
// stored: the same on every node and every run.
type Tags [Shards]string

// NewTags computes the shards' tags.
func NewTags() *Tags {
	var t Tags
	width := Slots / Shards
	for i := range t {
		for n := 0; ; n++ {
			tag := "j" + strconv.Itoa(i) + "." + strconv.Itoa(n)
			if Slot(tag)/width == i {
				t[i] = "{" + tag + "}"
				break
			}
		}
	}
	return &t
}

// Shard is the shard of a conversation.
func Shard(conv string) int {
	h := fnv.New32a()
	h.Write([]byte(conv))
	return int(h.Sum32() % Shards)
}

// Of returns the tag of conv's shard.
func (t *Tags) Of(conv string) string { return t[Shard(conv)] }

// Slot returns the Redis Cluster slot of key, as Redis computes it: the
// CRC16 of the hash tag (the part between the first "{" and the next "}",
// if not empty), or else of the whole key, modulo Slots.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key)) % Slots
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the
// checksum of Redis Cluster's key hashing.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
