package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
)

// floorAddrEnv and floorPoolEnv carry the Redis address and pool size to the floor process.
const (
	floorAddrEnv = "PRISM_BENCH_FLOOR_REDIS_ADDR"
	floorPoolEnv = "PRISM_BENCH_FLOOR_REDIS_POOL_SIZE"
)

// floor serves the Cache messages with one plain Redis command per call and nothing else: no
// validation, no TTL read, no metrics.
type floor struct {
	cachev1.UnimplementedCacheServiceServer
	rdb *redis.Client
}

// registerFloor is the floor process's setup (benchkit.FloorFunc).
func registerFloor(ctx context.Context, srv *grpc.Server) (func(), error) {
	pool, err := strconv.Atoi(os.Getenv(floorPoolEnv))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", floorPoolEnv, err)
	}
	rdb := newRedis(os.Getenv(floorAddrEnv), pool)
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("ping redis: %w", err)
	}
	cachev1.RegisterCacheServiceServer(srv, &floor{rdb: rdb})
	return func() { _ = rdb.Close() }, nil
}

func (f *floor) Get(ctx context.Context, req *cachev1.GetRequest) (*cachev1.GetResponse, error) {
	v, err := f.rdb.Get(ctx, "prism:"+req.GetNamespace()+":"+req.GetKey()).Bytes()
	if errors.Is(err, redis.Nil) {
		return &cachev1.GetResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	return &cachev1.GetResponse{Found: true, Value: v}, nil
}

func (f *floor) Set(ctx context.Context, req *cachev1.SetRequest) (*cachev1.SetResponse, error) {
	if err := f.rdb.Set(ctx, "prism:"+req.GetNamespace()+":"+req.GetKey(), req.GetValue(), 0).Err(); err != nil {
		return nil, err
	}
	return &cachev1.SetResponse{Stored: true}, nil
}

func (f *floor) MGet(ctx context.Context, req *cachev1.MGetRequest) (*cachev1.MGetResponse, error) {
	keys := make([]string, len(req.GetKeys()))
	for i, k := range req.GetKeys() {
		keys[i] = "prism:" + req.GetNamespace() + ":" + k
	}
	vals, err := f.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	resp := &cachev1.MGetResponse{Entries: make([]*cachev1.Entry, len(vals))}
	for i, v := range vals {
		e := &cachev1.Entry{Key: req.GetKeys()[i]}
		if s, ok := v.(string); ok {
			// The reply string is only read from here on: hand its bytes over without a copy,
			// as the plugin does.
			e.Found, e.Value = true, unsafe.Slice(unsafe.StringData(s), len(s)) //nolint:gosec // read-only view
		}
		resp.Entries[i] = e
	}
	return resp, nil
}

func (f *floor) MSet(ctx context.Context, req *cachev1.MSetRequest) (*cachev1.MSetResponse, error) {
	pairs := make([]any, 0, 2*len(req.GetEntries()))
	for _, e := range req.GetEntries() {
		pairs = append(pairs, "prism:"+req.GetNamespace()+":"+e.GetKey(), e.GetValue())
	}
	if err := f.rdb.MSet(ctx, pairs...).Err(); err != nil {
		return nil, err
	}
	return &cachev1.MSetResponse{}, nil
}
