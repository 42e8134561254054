package containerd

import (
	"maps"
	"strconv"
	"strings"
	"time"

	ctd "github.com/containerd/containerd"

	"github.com/shoal-dev/shoal/node/container"
)

// Container labels this package keeps for itself.
const (
	labelLogPath    = container.ReservedLabelPrefix + "log-path"
	labelImageID    = container.ReservedLabelPrefix + "image-id"
	labelStartedAt  = container.ReservedLabelPrefix + "started-at"
	labelFinishedAt = container.ReservedLabelPrefix + "finished-at"
	labelExitCode   = container.ReservedLabelPrefix + "exit-code"
	labelOOMKilled  = container.ReservedLabelPrefix + "oom-killed"
	labelStdin      = container.ReservedLabelPrefix + "stdin"
	labelStdinOnce  = container.ReservedLabelPrefix + "stdin-once"
	labelTTY        = container.ReservedLabelPrefix + "tty"
)

// userLabels drops the labels of this package and containerd's.
func userLabels(all map[string]string) map[string]string {
	out := maps.Clone(all)
	for k := range out {
		if strings.HasPrefix(k, container.ReservedLabelPrefix) || k == ctd.StopSignalLabel {
			delete(out, k)
		}
	}
	if out == nil {
		out = map[string]string{}
	}
	return out
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// exitLabels records an exit; startLabels records a start and clears the
// previous exit ("" is read as absent).
func exitLabels(e container.Exit) map[string]string {
	return map[string]string{
		labelExitCode:   strconv.Itoa(e.ExitCode),
		labelFinishedAt: formatTime(e.At),
		labelOOMKilled:  strconv.FormatBool(e.OOMKilled),
	}
}

func startLabels(at time.Time) map[string]string {
	return map[string]string{labelStartedAt: formatTime(at), labelExitCode: "", labelFinishedAt: "", labelOOMKilled: ""}
}
