//go:build !monkey

package regress

// buildTags are the tags the binaries under test are built with.
var buildTags []string
