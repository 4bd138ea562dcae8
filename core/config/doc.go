// Package config loads a plugin's configuration: defaults from one constructor, then the YAML
// file, then environment variables, then Validate. Unknown keys are errors that name the file and
// the key; every key has a PRISM_<SECTION>_<KEY> environment override; secrets use a redacting type.
package config
