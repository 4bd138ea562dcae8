package rediscache

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/internal/testsvc"
)

func TestHashSlotMatchesRedis(t *testing.T) {
	addr := testsvc.RedisClusterAddrs(t)[0]
	host, port, _ := strings.Cut(addr, ":")
	keys := []string{
		"prism:ns:k", "foo", "123456789", "{user1000}.following", "{user1000}.followers",
		"foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "{}", "prism:ns:ünïcødé", "",
	}
	for _, k := range keys {
		out, err := exec.CommandContext(t.Context(), "redis-cli", "--no-auth-warning", "-h", host, "-p", port,
			"--user", testsvc.RedisAdminUser, "--pass", testsvc.RedisAdminPassword, "CLUSTER", "KEYSLOT", k).Output()
		require.NoError(t, err)
		want, err := strconv.Atoi(strings.TrimSpace(string(out)))
		require.NoError(t, err, "CLUSTER KEYSLOT %q answered %q", k, out)
		assert.Equal(t, want, hashSlot(k), "slot of %q", k)
	}
}

func TestGroupBySlotKeepsRequestPositions(t *testing.T) {
	keys := []string{"{a}1", "{b}1", "{a}2", "{c}1", "{b}2", "{a}1"}
	groups := groupBySlot(keys)
	require.Len(t, groups, 3)
	assert.Equal(t, []int{0, 2, 5}, groups[0].idx)
	assert.Equal(t, []int{1, 4}, groups[1].idx)
	assert.Equal(t, []int{3}, groups[2].idx)
	assert.Equal(t, []string{"{b}1", "{b}2"}, groups[1].keys(keys))
}
