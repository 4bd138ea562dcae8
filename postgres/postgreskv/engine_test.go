package postgreskv

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core/apierr"
)

func TestDecodePreconditionFailure(t *testing.T) {
	cases := []struct {
		name, facts, want string
	}{
		{"absent required, item exists", "2 1 0 41", "preconditions[2]: item exists (version 41) but absent was required"},
		{"version required, item missing", "0 0 7", "preconditions[0]: item does not exist but version 7 was required"},
		{"version required, item at another", "1 0 7 9", "preconditions[1]: item has version 9 but version 7 was required"},
		{"a report of a precondition that holds", "0 0 7 7", `check preconditions: failure reported for a precondition that holds ("0 0 7 7")`},
		{"a report that is not one", "oops", `check preconditions: malformed failure report "oops"`},
		{"a report with too few facts", "1 0", `check preconditions: malformed failure report "1 0"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := decodePreconditionFailure(tc.facts)
			require.EqualError(t, err, tc.want)
			aborted := tc.want[0] == 'p'
			assert.Equal(t, aborted, errors.Is(err, apierr.ErrAborted), "only real failures are ABORTED")
		})
	}
}

func TestPageAssembly(t *testing.T) {
	type row struct {
		id, key string
		size    int64
	}
	rows := []row{{"a", "1", 10}, {"a", "2", 10}, {"b", "1", 10}, {"c", "1", 10}}
	cases := []struct {
		name      string
		pageSize  int
		maxBytes  int64
		wantIDs   []string // records in the page
		wantItems int
		wantMore  bool
	}{
		{"everything fits", 10, 1000, []string{"a", "b", "c"}, 4, false},
		{"cut by count inside a record", 1, 1000, []string{"a"}, 1, true},
		{"cut by count at a record boundary", 2, 1000, []string{"a"}, 2, true},
		{"the byte budget is soft: the crossing item is in", 10, 15, []string{"a"}, 2, true},
		{"a budget below one item still holds one", 10, 1, []string{"a"}, 1, true},
		{"an exact fit ends the page", 10, 30, []string{"a", "b"}, 3, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pg := &page{pageSize: tc.pageSize, maxBytes: tc.maxBytes}
			for _, r := range rows {
				if !pg.add([]byte(r.id), Item{Key: []byte(r.key)}, r.size-1) {
					break
				}
			}
			var ids []string
			for _, rec := range pg.records {
				ids = append(ids, rec.ID)
			}
			assert.Equal(t, tc.wantIDs, ids)
			assert.Equal(t, tc.wantItems, pg.count)
			assert.Equal(t, tc.wantMore, pg.more)

			tokens := pageTokens{key: []byte("test key")}
			bind := scanBinding("ns", "")
			next := pg.next(tokens, bind, true)
			if !tc.wantMore {
				assert.Empty(t, next, "the last page has no next token")
				return
			}
			pos, err := tokens.open(bind, next)
			require.NoError(t, err)
			last := pg.records[len(pg.records)-1]
			assert.Equal(t, last.ID, string(pos.id), "the token resumes after the last record")
			assert.Equal(t, last.Items[len(last.Items)-1].Key, pos.key, "and after its last key")
		})
	}
}

func TestPageTruncate(t *testing.T) {
	pg := &page{pageSize: 10, maxBytes: 1000}
	for _, r := range [][2]string{{"a", "1"}, {"a", "2"}, {"b", "1"}} {
		require.True(t, pg.add([]byte(r[0]), Item{Key: []byte(r[1])}, 1))
	}
	pg.truncate(0, 1)
	require.Len(t, pg.records, 1, "the cut record stays with the items before the cut")
	assert.Len(t, pg.records[0].Items, 1)
	assert.True(t, pg.more, "a cut page is followed by another")
	pg.truncate(0, 0)
	assert.Empty(t, pg.items(), "a cut at a record's first item drops the record")
}
