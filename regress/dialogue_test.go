package regress

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dialogueConfig is the default configuration with small limits, so the
// limit cases stay small.
var dialogueConfig = strings.Replace(DefaultConfig, `retry_base = "1s"`, `retry_base   = "1s"
  message_size = "64K"
  recipients   = 100
  line_length  = 1000`, 1)

// TestDialogues plays every scripted dialogue of testdata/dialogues
// against its own daemon, then checks how many messages were delivered
// ("# delivered: N" in the script), which is how a smuggled transaction
// would show.
func TestDialogues(t *testing.T) {
	paths, _ := filepath.Glob("testdata/dialogues/*.dlg")
	if len(paths) < 10 {
		t.Fatalf("%d dialogues", len(paths))
	}
	delivered := regexp.MustCompile(`(?m)^# delivered: (\d+)$`)
	for _, p := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(p), ".dlg"), func(t *testing.T) {
			t.Parallel()
			script, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			m := delivered.FindSubmatch(script)
			if m == nil {
				t.Fatal("no '# delivered: N' line")
			}
			want, _ := strconv.Atoi(string(m[1]))
			d := StartWith(t, bin, Options{Config: dialogueConfig})
			if err := RunDialogue(d.SMTPAddr, string(script)); err != nil {
				t.Fatal(err)
			}
			if want > 0 {
				d.WaitMail(want, 10*time.Second)
			}
			// anything smuggled would be delivered about as fast
			time.Sleep(300 * time.Millisecond)
			if got := d.Mail(); len(got) != want {
				t.Errorf("%d messages delivered, want %d: %v", len(got), want, got)
			}
			if strings.Contains(d.Log(), "fatal") {
				t.Errorf("a process failed:\n%s", d.Log())
			}
		})
	}
}
