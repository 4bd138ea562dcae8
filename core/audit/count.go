package audit

import (
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Count is how many items, keys, entries or records a message carries: the length of its first
// repeated field, else 1 when it addresses a single key, else 0. Where to look is worked out once
// per message type.
func Count(msg any) int {
	pm, ok := msg.(proto.Message)
	if !ok {
		return 0
	}
	m := pm.ProtoReflect()
	p := countPlanFor(m.Descriptor())
	switch {
	case p.list != nil:
		return m.Get(p.list).List().Len()
	case p.single:
		return 1
	}
	return 0
}

type countPlan struct {
	list   protoreflect.FieldDescriptor
	single bool
}

var countPlans sync.Map // protoreflect.FullName -> *countPlan

func countPlanFor(md protoreflect.MessageDescriptor) *countPlan {
	if p, ok := countPlans.Load(md.FullName()); ok {
		return p.(*countPlan)
	}
	p := &countPlan{}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.IsList() && p.list == nil {
			p.list = fd
		}
		if fd.Name() == "key" {
			p.single = true
		}
	}
	countPlans.Store(md.FullName(), p)
	return p
}
