package auth

import (
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Targets appends to dst the namespaces or topics a request addresses, found by field name
// (namespace, topic, topics) at the top level or one message deep (SubscribeRequest's
// subscription.topics), and returns the noun to name them by. Where those fields are is worked out
// once per message type. ok is false when the message type has no such field at all.
func Targets(msg any, dst []string) (targets []string, noun string, ok bool) {
	pm, isProto := msg.(proto.Message)
	if !isProto {
		return dst, "", false
	}
	m := pm.ProtoReflect()
	p := planFor(m.Descriptor())
	if len(p.paths) == 0 {
		return dst, "", false
	}
	for _, path := range p.paths {
		cur := m
		present := true
		for _, fd := range path[:len(path)-1] {
			if !cur.Has(fd) {
				present = false
				break
			}
			cur = cur.Get(fd).Message()
		}
		if !present {
			continue
		}
		leaf := path[len(path)-1]
		if leaf.IsList() {
			list := cur.Get(leaf).List()
			for i := range list.Len() {
				dst = append(dst, list.Get(i).String())
			}
			continue
		}
		dst = append(dst, cur.Get(leaf).String())
	}
	return dst, p.noun, true
}

type targetPlan struct {
	paths [][]protoreflect.FieldDescriptor
	noun  string
}

var plans sync.Map // protoreflect.FullName -> *targetPlan

func planFor(md protoreflect.MessageDescriptor) *targetPlan {
	if p, ok := plans.Load(md.FullName()); ok {
		return p.(*targetPlan)
	}
	p := &targetPlan{noun: "namespace"}
	add := func(prefix []protoreflect.FieldDescriptor, fields protoreflect.FieldDescriptors) {
		for i := range fields.Len() {
			fd := fields.Get(i)
			if fd.Kind() != protoreflect.StringKind || fd.IsMap() {
				continue
			}
			switch fd.Name() {
			case "namespace", "topic", "topics":
				p.paths = append(p.paths, append(append([]protoreflect.FieldDescriptor{}, prefix...), fd))
				if strings.HasPrefix(string(fd.Name()), "topic") {
					p.noun = "topic"
				}
			}
		}
	}
	add(nil, md.Fields())
	if len(p.paths) == 0 {
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
				add([]protoreflect.FieldDescriptor{fd}, fd.Message().Fields())
			}
		}
	}
	plans.Store(md.FullName(), p)
	return p
}
