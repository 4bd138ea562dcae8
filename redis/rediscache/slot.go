package rediscache

import "strings"

// slotCount is the number of hash slots in Redis Cluster.
const slotCount = 16384

// hashSlot is the Redis Cluster slot of key: CRC16 (XMODEM) of the key, or of its hash tag (the
// first non-empty {...} section), modulo 16384.
func hashSlot(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			key = key[open+1 : open+1+end]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^key[i]]
	}
	return int(crc) % slotCount
}

// slotGroup lists the positions (in request order) of the keys that share one hash slot.
type slotGroup struct {
	slot int
	idx  []int
}

// keys returns the group's keys, picked out of the request's keys.
func (g slotGroup) keys(all []string) []string {
	out := make([]string, len(g.idx))
	for i, j := range g.idx {
		out[i] = all[j]
	}
	return out
}

// groupBySlot splits keys into per-slot groups, in order of each slot's first key, so multi-key
// commands never span slots (CROSSSLOT) and results can be put back in request order.
func groupBySlot(keys []string) []slotGroup {
	bySlot := make(map[int]int, len(keys))
	groups := make([]slotGroup, 0, len(keys))
	for i, k := range keys {
		slot := hashSlot(k)
		gi, ok := bySlot[slot]
		if !ok {
			gi = len(groups)
			bySlot[slot] = gi
			groups = append(groups, slotGroup{slot: slot})
		}
		groups[gi].idx = append(groups[gi].idx, i)
	}
	return groups
}

var crc16Table = func() [256]uint16 {
	var t [256]uint16
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()
