package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"

	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

// floorURLEnv and floorPoolEnv carry the database and pool size to the floor process.
const (
	floorURLEnv  = "PRISM_BENCH_FLOOR_DATABASE_URL"
	floorPoolEnv = "PRISM_BENCH_FLOOR_POOL_SIZE"
)

// The floor's statements: the least SQL that answers each call, without TTLs, locks,
// idempotency tokens or byte budgets.
const (
	floorGetSQL = `SELECT key, value, version FROM prism_kv_items WHERE namespace = $1 AND id = $2 AND key = ANY($3::bytea[]) ORDER BY key`
	floorPutSQL = `INSERT INTO prism_kv_items (namespace, id, key, value, version)
	SELECT $1, $2, u.k, u.v, nextval('prism_kv_version') FROM unnest($3::bytea[], $4::bytea[]) AS u(k, v)
	ON CONFLICT (namespace, id, key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version
	RETURNING key, version`
	floorScanSQL = `SELECT id, key, value, version FROM prism_kv_items WHERE namespace = $1 ORDER BY id, key LIMIT $2`
)

// floor serves the KeyValue messages with one minimal statement per call.
type floor struct {
	keyvaluev1.UnimplementedKeyValueServiceServer
	pool *pgxpool.Pool
}

// registerFloor is the floor process's setup (benchkit.FloorFunc).
func registerFloor(ctx context.Context, srv *grpc.Server) (func(), error) {
	size, err := strconv.Atoi(os.Getenv(floorPoolEnv))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", floorPoolEnv, err)
	}
	pool, err := newPool(ctx, os.Getenv(floorURLEnv), size)
	if err != nil {
		return nil, err
	}
	keyvaluev1.RegisterKeyValueServiceServer(srv, &floor{pool: pool})
	return pool.Close, nil
}

func (f *floor) Get(ctx context.Context, req *keyvaluev1.GetRequest) (*keyvaluev1.GetResponse, error) {
	items, err := floorGet(ctx, f.pool, req.GetNamespace(), req.GetId(), req.GetKeys())
	if err != nil {
		return nil, err
	}
	return &keyvaluev1.GetResponse{Found: len(items) > 0, Items: items}, nil
}

func (f *floor) Put(ctx context.Context, req *keyvaluev1.PutRequest) (*keyvaluev1.PutResponse, error) {
	versions, err := floorPut(ctx, f.pool, req.GetNamespace(), req.GetId(), req.GetItems())
	if err != nil {
		return nil, err
	}
	return &keyvaluev1.PutResponse{Versions: versions}, nil
}

func (f *floor) Scan(ctx context.Context, req *keyvaluev1.ScanRequest) (*keyvaluev1.ScanResponse, error) {
	recs, err := floorScan(ctx, f.pool, req.GetNamespace(), int(req.GetPageSize()))
	if err != nil {
		return nil, err
	}
	return &keyvaluev1.ScanResponse{Records: recs}, nil
}

func floorGet(ctx context.Context, pool *pgxpool.Pool, ns, id string, keys [][]byte) ([]*keyvaluev1.Item, error) {
	rows, err := pool.Query(ctx, floorGetSQL, ns, []byte(id), keys)
	if err != nil {
		return nil, err
	}
	var items []*keyvaluev1.Item
	var key, value []byte
	var version int64
	_, err = pgx.ForEachRow(rows, []any{&key, &value, &version}, func() error {
		items = append(items, &keyvaluev1.Item{Key: key, Value: value, Version: version})
		key, value = nil, nil
		return nil
	})
	return items, err
}

func floorPut(ctx context.Context, pool *pgxpool.Pool, ns, id string, items []*keyvaluev1.PutItem) ([]*keyvaluev1.ItemVersion, error) {
	keys := make([][]byte, len(items))
	values := make([][]byte, len(items))
	for i, it := range items {
		keys[i], values[i] = it.GetKey(), it.GetValue()
	}
	rows, err := pool.Query(ctx, floorPutSQL, ns, []byte(id), keys, values)
	if err != nil {
		return nil, err
	}
	var versions []*keyvaluev1.ItemVersion
	var key []byte
	var version int64
	_, err = pgx.ForEachRow(rows, []any{&key, &version}, func() error {
		versions = append(versions, &keyvaluev1.ItemVersion{Key: key, Version: version})
		key = nil
		return nil
	})
	return versions, err
}

func floorScan(ctx context.Context, pool *pgxpool.Pool, ns string, limit int) ([]*keyvaluev1.Record, error) {
	rows, err := pool.Query(ctx, floorScanSQL, ns, limit)
	if err != nil {
		return nil, err
	}
	var recs []*keyvaluev1.Record
	var id, key, value []byte
	var version int64
	_, err = pgx.ForEachRow(rows, []any{&id, &key, &value, &version}, func() error {
		if len(recs) == 0 || recs[len(recs)-1].GetId() != string(id) {
			recs = append(recs, &keyvaluev1.Record{Id: string(id)})
		}
		r := recs[len(recs)-1]
		r.Items = append(r.Items, &keyvaluev1.Item{Key: key, Value: value, Version: version})
		id, key, value = nil, nil, nil
		return nil
	})
	return recs, err
}
