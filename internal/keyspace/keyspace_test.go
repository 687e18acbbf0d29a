package keyspace

import "testing"

// Slots as Redis computes them (CLUSTER KEYSLOT on redis-server 7).
func TestSlotMatchesRedis(t *testing.T) {
	for key, want := range map[string]int{
		"foo":                  12182,
		"bar":                  5061,
		"{user1000}.following": 3443,
		"{user1000}.followers": 3443,
		"foo{}{bar}":           8363,
		"foo{{bar}}zap":        4015,
		"foo{bar}{zap}":        5061,
		"123456789":            12739,
	} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
}

// Each shard's tag hashes into its own part of the slots, and a
// conversation's keys share its shard's slot.
func TestTagsSpreadOverSlots(t *testing.T) {
	tags := NewTags()
	width := Slots / Shards
	seen := map[string]bool{}
	for i, tag := range tags {
		if seen[tag] {
			t.Fatalf("tag %s twice", tag)
		}
		seen[tag] = true
		if s := Slot("chat:" + tag + "history"); s/width != i {
			t.Errorf("shard %d: tag %s in slot %d, outside [%d, %d)", i, tag, s, i*width, (i+1)*width)
		}
	}
	if *NewTags() != *tags {
		t.Fatal("tags differ between two computations")
	}
	conv := "dm:alice:bob"
	tag := tags.Of(conv)
	if Slot("chat:"+tag+"seq:"+conv) != Slot("chat:"+tag+"history") {
		t.Fatal("a conversation's counter is not in its stream's slot")
	}
	counts := make([]int, Shards)
	for i := range 10000 {
		counts[Shard("dm:u"+itoa(i)+":v")]++
	}
	for i, n := range counts {
		if n < 10000/Shards/2 {
			t.Errorf("shard %d got %d of 10000 conversations", i, n)
		}
	}
}

func itoa(i int) string {
	return string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676%26))
}
