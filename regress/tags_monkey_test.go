//go:build monkey

package regress

// buildTags are the tags the binaries under test are built with: this
// test binary drives a monkey build.
var buildTags = []string{"monkey"}
