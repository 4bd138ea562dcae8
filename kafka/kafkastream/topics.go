package kafkastream

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/prism-gateway/plugins/core/apierr"
)

// topicInfo is what the plugin caches about one topic.
type topicInfo struct {
	partitions int32
	id         [16]byte
	fetched    time.Time
}

// topics resolves request topics: default topic, name rules, allow-list, existence (with a short
// cache) and auto-creation.
type topics struct {
	admin   *kadm.Client
	backend *BackendConfig

	mu    sync.Mutex
	cache map[string]topicInfo
	// creating deduplicates concurrent auto-creation of the same topic.
	creating map[string]chan struct{}
}

func newTopics(admin *kadm.Client, backend *BackendConfig) *topics {
	return &topics{admin: admin, backend: backend, cache: map[string]topicInfo{}, creating: map[string]chan struct{}{}}
}

// name applies the default topic and checks the name and the allow-list; field names the request
// field for errors.
func (t *topics) name(field, topic string) (string, error) {
	if topic == "" {
		topic = t.backend.Topic
		if topic == "" {
			return "", apierr.Invalid(field, "required (no default topic is configured)")
		}
	}
	if err := validTopicName(topic); err != nil {
		return "", apierr.Invalid(field, "%v", err)
	}
	if !t.allowed(topic) {
		return "", apierr.New(apierr.ErrPermissionDenied, "%s: topic %q is not in backend.topics", field, topic)
	}
	return topic, nil
}

func (t *topics) allowed(topic string) bool {
	if len(t.backend.Topics) == 0 {
		return true
	}
	for _, pattern := range t.backend.Topics {
		if ok, _ := path.Match(pattern, topic); ok {
			return true
		}
	}
	return false
}

// partitions returns the topic's partition count, creating the topic when allowed. An unknown
// topic is NOT_FOUND.
func (t *topics) partitions(ctx context.Context, field, topic string) (int32, error) {
	t.mu.Lock()
	info, ok := t.cache[topic]
	t.mu.Unlock()
	if ok && time.Since(info.fetched) < t.backend.TopicCacheTTL {
		return info.partitions, nil
	}
	n, err := t.lookup(ctx, topic)
	if err == nil {
		return n, nil
	}
	if !errors.Is(err, apierr.ErrNotFound) {
		return 0, err
	}
	if !t.backend.AutoCreateTopics {
		return 0, apierr.New(apierr.ErrNotFound, "%s: topic %q does not exist", field, topic)
	}
	if err := t.create(ctx, topic); err != nil {
		return 0, err
	}
	// The brokers answer CreateTopics before the new topic shows in metadata everywhere.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := t.lookup(ctx, topic)
		if err == nil || !errors.Is(err, apierr.ErrNotFound) || time.Now().After(deadline) {
			return n, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lookup asks the brokers about one topic and caches the answer.
func (t *topics) lookup(ctx context.Context, topic string) (int32, error) {
	details, err := t.admin.ListTopics(ctx, topic)
	if err != nil {
		return 0, apierr.Unavailable("list kafka topics", err)
	}
	d, ok := details[topic]
	if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		t.forget(topic)
		return 0, apierr.New(apierr.ErrNotFound, "topic %q does not exist", topic)
	}
	if d.Err != nil {
		return 0, topicError(topic, d.Err)
	}
	n := int32(len(d.Partitions))
	t.mu.Lock()
	t.cache[topic] = topicInfo{partitions: n, id: d.ID, fetched: time.Now()}
	t.mu.Unlock()
	return n, nil
}

// id returns the topic's ID as last looked up; zero when unknown.
func (t *topics) id(topic string) [16]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cache[topic].id
}

func (t *topics) forget(topic string) {
	t.mu.Lock()
	delete(t.cache, topic)
	t.mu.Unlock()
}

// create makes a topic with the configured shape; a topic that appeared meanwhile is fine.
func (t *topics) create(ctx context.Context, topic string) error {
	t.mu.Lock()
	if ch, ok := t.creating[topic]; ok {
		t.mu.Unlock()
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ch := make(chan struct{})
	t.creating[topic] = ch
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.creating, topic)
		t.mu.Unlock()
		close(ch)
	}()
	resp, err := t.admin.CreateTopic(ctx, int32(t.backend.TopicPartitions), int16(t.backend.TopicReplicationFactor), nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return topicError(topic, fmt.Errorf("create topic: %w", err))
	}
	return nil
}

// topicError maps broker errors about a topic to API errors.
func topicError(topic string, err error) error {
	switch {
	case errors.Is(err, kerr.TopicAuthorizationFailed):
		return apierr.New(apierr.ErrPermissionDenied, "topic %q: the plugin's Kafka user is not authorized", topic)
	case errors.Is(err, kerr.InvalidTopicException):
		return apierr.New(apierr.ErrInvalidArgument, "topic %q: %v", topic, err)
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return apierr.New(apierr.ErrNotFound, "topic %q does not exist", topic)
	}
	return apierr.Unavailable("topic "+topic, err)
}
