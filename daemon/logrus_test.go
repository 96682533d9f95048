package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestLibcontainerLogsReachSlog(t *testing.T) {
	var buf bytes.Buffer
	logrusToSlog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	defer logrus.StandardLogger().ReplaceHooks(logrus.LevelHooks{})
	logrus.WithField("container", "abc").Warn("cgroup busy")
	logrus.Debug("not shown at info")
	out := buf.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, `msg="cgroup busy"`) ||
		!strings.Contains(out, "container=abc") || !strings.Contains(out, "component=libcontainer") {
		t.Fatalf("logrus entry not in slog: %q", out)
	}
	if strings.Contains(out, "not shown") {
		t.Fatal("debug entry logged at info level")
	}
}
