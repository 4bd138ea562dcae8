// Package imagetest holds the container image test of `make test`: it builds the offline images
// (make build build-debug, IMAGE_SOURCE=offline) once, checks each image's config and files, and
// runs each production image read-only, non-root and with every capability dropped against the
// real test backends until it serves, then stops it with SIGTERM.
package imagetest
