package kafkastream

import (
	"slices"
	"strconv"
	"strings"
)

// commitMetaPrefix versions the commit metadata format.
const commitMetaPrefix = "prism1;"

// maxMetaAttempts bounds the per-message counts kept in commit metadata, which brokers cap at
// offset.metadata.max.bytes (4096 by default).
const maxMetaAttempts = 64

// commitMeta is what a member leaves in a partition's commit metadata for the next owner: how far
// the group has delivered, and which messages were delivered more than once.
type commitMeta struct {
	deliveredEnd int64
	attempts     map[int64]int32
}

// priorAttempts is how often earlier members delivered the message at offset.
func (st *partState) priorAttempts(offset int64) int32 {
	if n, ok := st.prior[offset]; ok {
		return n
	}
	if offset < st.deliveredEnd {
		return 1
	}
	return 0
}

// encodeMeta writes "prism1;<deliveredEnd>;<offset>:<attempts>,..." for unsettled messages at or
// after the commit point that were delivered more than once.
func (st *partState) encodeMeta() string {
	counts := map[int64]int32{}
	for off, n := range st.prior {
		if off >= st.commitNext && n > 1 {
			counts[off] = n
		}
	}
	for off, d := range st.inflight {
		if !d.acked && d.attempt > 1 {
			counts[off] = d.attempt
		}
	}
	offsets := make([]int64, 0, len(counts))
	for off := range counts {
		offsets = append(offsets, off)
	}
	slices.Sort(offsets)
	if len(offsets) > maxMetaAttempts {
		offsets = offsets[:maxMetaAttempts]
	}
	var b strings.Builder
	b.WriteString(commitMetaPrefix)
	b.WriteString(strconv.FormatInt(st.deliveredEnd, 10))
	b.WriteByte(';')
	for i, off := range offsets {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(off, 10))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(int(counts[off])))
	}
	return b.String()
}

// parseCommitMeta reads encodeMeta's output; metadata written by anything else is ignored.
func parseCommitMeta(s string) (commitMeta, bool) {
	rest, ok := strings.CutPrefix(s, commitMetaPrefix)
	if !ok {
		return commitMeta{}, false
	}
	endStr, list, ok := strings.Cut(rest, ";")
	if !ok {
		return commitMeta{}, false
	}
	end, err := strconv.ParseInt(endStr, 10, 64)
	if err != nil {
		return commitMeta{}, false
	}
	meta := commitMeta{deliveredEnd: end, attempts: map[int64]int32{}}
	if list == "" {
		return meta, true
	}
	for _, item := range strings.Split(list, ",") {
		offStr, nStr, ok := strings.Cut(item, ":")
		off, err1 := strconv.ParseInt(offStr, 10, 64)
		n, err2 := strconv.ParseInt(nStr, 10, 32)
		if !ok || err1 != nil || err2 != nil || n < 1 {
			return commitMeta{}, false
		}
		meta.attempts[off] = int32(n)
	}
	return meta, true
}

// needsCommit reports whether the partition has an offset or metadata the brokers do not have yet.
func (st *partState) needsCommit() bool {
	return st.commitNext >= 0 && (st.commitNext > st.committed || st.metaVer != st.metaSaved)
}

// commitPoint is one partition's pending commit: the offset, its metadata, and the state version
// that metadata describes.
type commitPoint struct {
	tp      topicPartition
	offset  int64
	meta    string
	version int
}

// pending returns the commits not yet made, with their metadata.
func (l *ledger) pending() []commitPoint {
	var out []commitPoint
	for tp, st := range l.parts {
		if st.needsCommit() {
			out = append(out, st.commitPoint(tp))
		}
	}
	return out
}

func (st *partState) commitPoint(tp topicPartition) commitPoint {
	return commitPoint{tp: tp, offset: st.commitNext, meta: st.encodeMeta(), version: st.metaVer}
}

// committed records a commit the brokers accepted; it returns nil for a partition not held.
func (l *ledger) committed(c commitPoint) *partState {
	st := l.parts[c.tp]
	if st == nil {
		return nil
	}
	st.committed = max(st.committed, c.offset)
	st.metaSaved = max(st.metaSaved, c.version)
	return st
}
