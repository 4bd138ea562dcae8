//go:build !nodev

package kafkastream

import (
	"fmt"
	"path/filepath"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/prism-gateway/plugins/core"
)

// EnableDevMode implements core.DevModeSupporter: Start runs an embedded single-broker Kafka
// (franz-go's kfake) that keeps its log under dataDir/kafka, so published records survive a
// restart. Topics are created on first use, since nothing else can create them there.
func (p *Plugin) EnableDevMode(dataDir string) error {
	p.dev = true
	if dataDir != "" {
		p.devDir = filepath.Join(dataDir, "kafka")
	}
	return nil
}

// startDevKafka starts the embedded broker and points the backend section at it.
func (p *Plugin) startDevKafka() error {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(3), kfake.ClusterID("prism-dev")}
	if p.devDir != "" {
		opts = append(opts, kfake.DataDir(p.devDir))
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start embedded kafka: %w", err)
	}
	p.devKafka = cluster
	dev := *p.backend
	dev.Brokers = cluster.ListenAddrs()
	dev.SASLMechanism, dev.SASLUsername, dev.SASLPassword = MechanismNone, "", ""
	dev.TLSEnabled, dev.TLSCAFile = false, ""
	dev.AutoCreateTopics = true
	p.backend = &dev
	p.log.Warn("DEV MODE: serving streams from an embedded Kafka (kfake); not for production",
		"brokers", dev.Brokers, "data_dir", p.devDir)
	return nil
}

var _ core.DevModeSupporter = (*Plugin)(nil)
