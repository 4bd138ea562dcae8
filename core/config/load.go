package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultPath is read when neither --config nor PRISM_PLUGIN_CONFIG names a file.
const DefaultPath = "/etc/prism/plugin.yaml"

// PathEnv names the variable that selects the config file when --config is absent.
const PathEnv = "PRISM_PLUGIN_CONFIG"

// Source says where the configuration comes from.
type Source struct {
	// Path is the YAML file; empty means none.
	Path string
	// Required is false only for the default path, whose absence is fine.
	Required bool
	// LookupEnv reads environment variables; os.LookupEnv when nil.
	LookupEnv func(string) (string, bool)
}

// ResolveSource picks the file from the --config flag, else PRISM_PLUGIN_CONFIG, else the default.
func ResolveSource(flagPath string, lookupEnv func(string) (string, bool)) Source {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	if flagPath != "" {
		return Source{Path: flagPath, Required: true, LookupEnv: lookupEnv}
	}
	if p, ok := lookupEnv(PathEnv); ok && p != "" {
		return Source{Path: p, Required: true, LookupEnv: lookupEnv}
	}
	return Source{Path: DefaultPath, Required: false, LookupEnv: lookupEnv}
}

// Load builds the configuration: defaults, then the YAML file, then the environment, then Validate.
func Load(schema Schema, src Source) (*Config, error) {
	cfg := Default(schema)
	if src.LookupEnv == nil {
		src.LookupEnv = os.LookupEnv
	}
	if src.Path != "" {
		data, err := os.ReadFile(src.Path)
		switch {
		case errors.Is(err, fs.ErrNotExist) && !src.Required:
		case err != nil:
			return nil, fmt.Errorf("read config: %w", err)
		default:
			if err := decodeYAML(cfg, src.Path, data); err != nil {
				return nil, err
			}
		}
	}
	if err := applyEnv(cfg, schema.EnvAliases, src.LookupEnv); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	return cfg, nil
}

// decodeYAML overlays the file on cfg, rejecting keys that no field declares.
func decodeYAML(cfg *Config, path string, data []byte) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if err := checkKeys(path, "", root, reflect.ValueOf(cfg).Elem()); err != nil {
		return err
	}
	// Sections are decoded one by one so plugin sections keep their concrete types.
	rv := reflect.ValueOf(cfg).Elem()
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, value := root.Content[i], root.Content[i+1]
		field, _ := fieldByTag(rv, key.Value)
		target := field.Addr().Interface()
		if field.Kind() == reflect.Interface {
			target = field.Interface()
		}
		if err := value.Decode(target); err != nil {
			return fmt.Errorf("%s: %s: %w", path, key.Value, err)
		}
	}
	return nil
}

// checkKeys walks a mapping node against the Go value it decodes into and reports the first key
// that has no field, with the file, line and full dotted path.
func checkKeys(file, prefix string, node *yaml.Node, v reflect.Value) error {
	for v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Struct:
		if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
			return nil
		}
		if node.Kind != yaml.MappingNode {
			if _, isText := v.Addr().Interface().(interface{ UnmarshalText([]byte) error }); isText {
				return nil
			}
			return fmt.Errorf("%s:%d: %s: must be a mapping", file, node.Line, strings.TrimSuffix(prefix, "."))
		}
		for i := 0; i+1 < len(node.Content); i += 2 {
			key := node.Content[i]
			field, ok := fieldByTag(v, key.Value)
			if !ok {
				return fmt.Errorf("%s:%d: unknown key %q", file, key.Line, prefix+key.Value)
			}
			if err := checkKeys(file, prefix+key.Value+".", node.Content[i+1], field); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if node.Kind != yaml.SequenceNode {
			return nil
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		for i, item := range node.Content {
			if err := checkKeys(file, fmt.Sprintf("%s%d.", prefix, i), item, elem); err != nil {
				return err
			}
		}
	case reflect.Map:
		if node.Kind != yaml.MappingNode {
			return nil
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		for i := 0; i+1 < len(node.Content); i += 2 {
			if err := checkKeys(file, prefix+node.Content[i].Value+".", node.Content[i+1], elem); err != nil {
				return err
			}
		}
	}
	return nil
}

// fieldByTag finds the struct field whose yaml tag is name.
func fieldByTag(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if tagName(t.Field(i)) == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func tagName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// leaf is one settable configuration key.
type leaf struct {
	path  string // dotted, e.g. control_plane.port
	value reflect.Value
}

// EnvName is the generic environment variable for a dotted config path.
func EnvName(path string) string {
	return "PRISM_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// walkLeaves calls fn for every scalar, list or map key in cfg, sections included.
func walkLeaves(cfg *Config, fn func(leaf)) {
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		for v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct || isTextType(v) {
			fn(leaf{path: strings.TrimSuffix(prefix, "."), value: v})
			return
		}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			if name := tagName(t.Field(i)); name != "" {
				walk(prefix+name+".", v.Field(i))
			}
		}
	}
	walk("", reflect.ValueOf(cfg).Elem())
}

func isTextType(v reflect.Value) bool {
	_, ok := v.Interface().(interface{ MarshalText() ([]byte, error) })
	return ok
}

// EnvKeys lists every config path with the environment variable that overrides it.
func EnvKeys(cfg *Config) [][2]string {
	var out [][2]string
	walkLeaves(cfg, func(l leaf) {
		if envSettable(l.value) {
			out = append(out, [2]string{l.path, EnvName(l.path)})
		}
	})
	return out
}

func envSettable(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint32, reflect.Uint64, reflect.Float64:
		return true
	case reflect.Slice:
		// Lists of structs (auth.policies) are set as one YAML or JSON document.
		k := v.Type().Elem().Kind()
		return k == reflect.String || k == reflect.Struct
	}
	return false
}

// applyEnv overrides keys from documented aliases first, then from PRISM_<SECTION>_<KEY>.
func applyEnv(cfg *Config, aliases map[string]string, lookup func(string) (string, bool)) error {
	byPath := map[string]reflect.Value{}
	walkLeaves(cfg, func(l leaf) {
		if envSettable(l.value) {
			byPath[l.path] = l.value
		}
	})
	names := make([]string, 0, len(aliases))
	for name := range aliases {
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		path := aliases[name]
		target, ok := byPath[path]
		if !ok {
			return fmt.Errorf("env alias %s: no config key %s", name, path)
		}
		if raw, set := lookup(name); set {
			if err := setFromString(target, raw); err != nil {
				errs = append(errs, fmt.Errorf("env %s (%s): %w", name, path, err))
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, path := range paths {
		name := EnvName(path)
		if raw, set := lookup(name); set {
			if err := setFromString(byPath[path], raw); err != nil {
				errs = append(errs, fmt.Errorf("env %s (%s): %w", name, path, err))
			}
		}
	}
	return errors.Join(errs...)
}

var durationType = reflect.TypeOf(time.Duration(0))

// setFromString parses raw into v; the value never appears in the error, since it may be secret.
func setFromString(v reflect.Value, raw string) error {
	raw = strings.TrimSpace(raw)
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return errors.New("not a duration (e.g. 5s, 250ms)")
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(raw)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return errors.New("not a boolean (true or false)")
		}
		v.SetBool(b)
	case v.CanInt():
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || v.OverflowInt(n) {
			return errors.New("not an integer in range")
		}
		v.SetInt(n)
	case v.CanUint():
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil || v.OverflowUint(n) {
			return errors.New("not a non-negative integer in range")
		}
		v.SetUint(n)
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return errors.New("not a number")
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		target := reflect.New(v.Type())
		dec := yaml.NewDecoder(strings.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(target.Interface()); err != nil {
			return errors.New("not a YAML or JSON list of mappings")
		}
		v.Set(target.Elem())
	case v.Kind() == reflect.Slice:
		var items []string
		for _, item := range strings.Split(raw, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		v.Set(reflect.ValueOf(items).Convert(v.Type()))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

// Render prints the effective configuration as YAML with secrets redacted.
func Render(cfg *Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("render config: %w", err)
	}
	return buf.Bytes(), enc.Close()
}

// Changes lists the config paths whose values differ between two configurations.
func Changes(old, next *Config) []string {
	before := map[string]reflect.Value{}
	walkLeaves(old, func(l leaf) { before[l.path] = l.value })
	var changed []string
	walkLeaves(next, func(l leaf) {
		prev, ok := before[l.path]
		if !ok || !reflect.DeepEqual(prev.Interface(), l.value.Interface()) {
			changed = append(changed, l.path)
		}
	})
	sort.Strings(changed)
	return changed
}
