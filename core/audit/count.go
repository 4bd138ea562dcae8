package audit

import (
	"reflect"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Count is how many items, keys, entries or records a message carries: the length of its first
// repeated field, else 1 when it addresses a single key, else 0. Where to look is worked out once
// per message type. For generated messages the length is read from the Go struct field, which
// unlike protobuf reflection of a list allocates nothing.
func Count(msg any) int {
	pm, ok := msg.(proto.Message)
	if !ok {
		return 0
	}
	p := countPlanFor(pm)
	switch {
	case p.field >= 0:
		v := reflect.ValueOf(msg)
		if v.IsNil() {
			return 0
		}
		return v.Elem().Field(p.field).Len()
	case p.list != nil:
		return pm.ProtoReflect().Get(p.list).List().Len()
	case p.single:
		return 1
	}
	return 0
}

type countPlan struct {
	list   protoreflect.FieldDescriptor
	field  int // index of list's Go struct field, or -1 to use protobuf reflection
	single bool
}

var countPlans sync.Map // reflect.Type -> *countPlan

func countPlanFor(pm proto.Message) *countPlan {
	t := reflect.TypeOf(pm)
	if p, ok := countPlans.Load(t); ok {
		return p.(*countPlan)
	}
	p := &countPlan{field: -1}
	fields := pm.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.IsList() && p.list == nil {
			p.list = fd
		}
		if fd.Name() == "key" {
			p.single = true
		}
	}
	if p.list != nil {
		p.field = structField(t, string(p.list.Name()))
	}
	countPlans.Store(t, p)
	return p
}

// structField finds the exported slice field generated for the proto field name (its protobuf
// struct tag says name=...), or -1.
func structField(t reflect.Type, name string) int {
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return -1
	}
	st := t.Elem()
	for i := range st.NumField() {
		f := st.Field(i)
		if !f.IsExported() || f.Type.Kind() != reflect.Slice {
			continue
		}
		for _, part := range strings.Split(f.Tag.Get("protobuf"), ",") {
			if part == "name="+name {
				return i
			}
		}
	}
	return -1
}
