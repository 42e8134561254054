package logfile

import (
	"testing"
	"time"
)

func TestAppendRecord(t *testing.T) {
	ts := time.Date(2026, 11, 25, 10, 4, 5, 123456789, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		ts         time.Time
		s          Stream
		partial    bool
		head, tail string
		want       string
	}{
		{ts, Stdout, false, "hello ", "world", "2026-11-25T09:04:05.123456789Z stdout F hello world\n"},
		{ts, Stderr, true, "", "chunk", "2026-11-25T09:04:05.123456789Z stderr P chunk\n"},
		{t0.Add(500 * time.Millisecond), Stdout, false, "", "", "2026-11-25T10:04:05.5Z stdout F \n"},
		{t0, Stdout, false, "a\tb\r", "", "2026-11-25T10:04:05Z stdout F a\tb\r\n"},
	} {
		got := string(appendRecord(nil, tc.ts, tc.s, tc.partial, []byte(tc.head), []byte(tc.tail)))
		if got != tc.want {
			t.Errorf("appendRecord = %q, want %q", got, tc.want)
		}
		rec, ok := parseRecord([]byte(got[:len(got)-1]))
		if !ok || !rec.ts.Equal(tc.ts) || rec.stream != tc.s || rec.partial != tc.partial || string(rec.content) != tc.head+tc.tail {
			t.Errorf("parseRecord(%q) = %+v, %v", got, rec, ok)
		}
	}
}

func TestParseRecord(t *testing.T) {
	const ts = "2026-11-25T10:04:05.123Z"
	for _, tc := range []struct {
		line    string
		ok      bool
		stream  Stream
		partial bool
		content string
	}{
		{ts + " stdout F hi", true, Stdout, false, "hi"},
		{ts + " stderr P  two  spaces ", true, Stderr, true, " two  spaces "},
		{ts + " stdout F", true, Stdout, false, ""},
		{ts + " stdout F ", true, Stdout, false, ""},
		{ts + " stdout F:x:y tagged", true, Stdout, false, "tagged"},
		{ts + " stdout P:x", true, Stdout, true, ""},
		{"2026-11-25T11:04:05.123+01:00 stdout F zone", true, Stdout, false, "zone"},
		{"", false, "", false, ""},
		{" ", false, "", false, ""},
		{ts, false, "", false, ""},
		{ts + " ", false, "", false, ""},
		{ts + " stdout", false, "", false, ""},
		{ts + " stdout ", false, "", false, ""},
		{ts + " stdin F hi", false, "", false, ""},
		{ts + " stdout X hi", false, "", false, ""},
		{ts + " stdout FF hi", false, "", false, ""},
		{ts + " stdout  F hi", false, "", false, ""},
		{ts + "  stdout F hi", false, "", false, ""},
		{"yesterday stdout F hi", false, "", false, ""},
		{"2026-13-25T10:04:05Z stdout F hi", false, "", false, ""},
		{"hello world", false, "", false, ""},
		{"\x00\xff\xfe stdout F x", false, "", false, ""},
	} {
		rec, ok := parseRecord([]byte(tc.line))
		if ok != tc.ok {
			t.Errorf("parseRecord(%q) ok = %v, want %v", tc.line, ok, tc.ok)
			continue
		}
		if ok && (rec.stream != tc.stream || rec.partial != tc.partial || string(rec.content) != tc.content) {
			t.Errorf("parseRecord(%q) = %+v %q", tc.line, rec, rec.content)
		}
	}
}

func TestRotatedNames(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	name := rotatedName("/l/0.log", at)
	if name != "/l/0.log.20260102-030405.000000006" {
		t.Fatalf("rotatedName = %q", name)
	}
	if got, ok := rotatedTime("/l/0.log", name); !ok || !got.Equal(at) {
		t.Errorf("rotatedTime = %v, %v", got, ok)
	}
	for _, bad := range []string{"/l/0.log", "/l/0.log.tmp", "/l/0.log.1", "/l/0.log.20260102-030405", "/l/0.log.20260102-030405.000000006.gz", "/l/1.log.20260102-030405.000000006"} {
		if _, ok := rotatedTime("/l/0.log", bad); ok {
			t.Errorf("rotatedTime(%q) ok", bad)
		}
	}
}
