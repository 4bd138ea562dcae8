package kafkastream

import (
	"strconv"
	"strings"
)

// ackID identifies one delivery of one message on one Subscribe stream. The epoch is a
// stream-unique number (random start, +1 per partition assignment), so an id from another stream
// or from before a rebalance does not match anything; every id is checked against the stream's
// live state before it is applied, so a forged id can at worst be ignored.
type ackID struct {
	topic     int // index into the subscription's topics
	partition int32
	epoch     uint32
	offset    int64
	attempt   int32
}

// String encodes the id as dot-separated base-36 numbers.
func (a ackID) String() string {
	b := make([]byte, 0, 40)
	b = strconv.AppendInt(b, int64(a.topic), 36)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(a.partition), 36)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(a.epoch), 36)
	b = append(b, '.')
	b = strconv.AppendInt(b, a.offset, 36)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(a.attempt), 36)
	return string(b)
}

// parseAckID decodes String's output; ok is false for anything else.
func parseAckID(s string) (ackID, bool) {
	var fields [5]int64
	for i := range fields {
		var part string
		if i < len(fields)-1 {
			var found bool
			part, s, found = strings.Cut(s, ".")
			if !found {
				return ackID{}, false
			}
		} else {
			part = s
		}
		n, err := strconv.ParseInt(part, 36, 64)
		if err != nil || n < 0 {
			return ackID{}, false
		}
		fields[i] = n
	}
	if fields[0] > 1<<20 || fields[1] > 1<<31-1 || fields[2] > 1<<32-1 || fields[4] > 1<<31-1 {
		return ackID{}, false
	}
	return ackID{topic: int(fields[0]), partition: int32(fields[1]), epoch: uint32(fields[2]), offset: fields[3], attempt: int32(fields[4])}, true
}
