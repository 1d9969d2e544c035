//go:build !monkey

package monkey

// Enabled is false: this build injects nothing.
const Enabled = false

// Fail returns an injected temporary failure at point, in a monkey build.
func Fail(point string) error { return nil }

// Delay waits a random moment at point, in a monkey build.
func Delay(point string) {}

// Crash kills the process or the daemon at an armed crash point, in a
// monkey build.
func Crash(point string) {}

// LostChild lets the parent take part in a crash of the whole daemon,
// in a monkey build.
func LostChild() {}
