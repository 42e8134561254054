package dns

import (
	"bufio"
	"bytes"
	"context"
	"encoding"
	"encoding/gob"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

// The test binary doubles as the DNS child and as an agent running one:
// TestMain runs the role this variable names instead of the tests.
const testRoleEnv = "SHOAL_DNS_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(testRoleEnv) {
	case "child":
		os.Exit(testChildMain(os.Args[1:]))
	case "agent":
		os.Exit(testAgentMain())
	}
	os.Exit(m.Run())
}

// testChildMain is `shoal dns-server` in miniature: the flags Child passes,
// then RunChild on stdin and stdout.
func testChildMain(args []string) int {
	fs := flag.NewFlagSet("dns-child", flag.ContinueOnError)
	listen := fs.String("listen", "", "")
	sockets := fs.Int("udp-sockets", 0, "")
	var ups []string
	fs.Func("upstream", "", func(s string) error { ups = append(ups, s); return nil })
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := Config{Addrs: strings.Split(*listen, ","), Upstreams: ups, UDPSockets: *sockets, Log: log}
	if err := RunChild(context.Background(), cfg, os.Stdin, os.Stdout); err != nil {
		log.Error("dns child", "err", err)
		return 1
	}
	return 0
}

// testAgentMain runs a Child on SHOAL_DNS_TEST_LISTEN with the test zone,
// prints the child's PID, and waits for stdin to end.
func testAgentMain() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := StartChild(ChildConfig{Path: self, Env: []string{testRoleEnv + "=child"},
		Addrs: []string{os.Getenv("SHOAL_DNS_TEST_LISTEN")}, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c.SetZoneConfig(testZoneConfig())
	fmt.Println(c.pid())
	io.Copy(io.Discard, os.Stdin)
	c.Close()
	return 0
}

// testLog is a logger writing to the test's log.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// freeAddr returns 127.0.0.1 with a port that was free for UDP and TCP.
func freeAddr(t *testing.T) string {
	t.Helper()
	udp, tcp, err := listenOnce(netip.MustParseAddrPort("127.0.0.1:0"), 1)
	if err != nil {
		t.Fatal(err)
	}
	addr := tcp.Addr().String()
	udp[0].Close()
	tcp.Close()
	return addr
}

// lookup asks addr for name's A records over UDP.
func lookup(addr, name string) (rcode int, ips []string, err error) {
	c := &miekg.Client{Net: "udp", Timeout: time.Second}
	m := new(miekg.Msg)
	m.SetQuestion(name, miekg.TypeA)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		return -1, nil, err
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*miekg.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	return r.Rcode, ips, nil
}

// waitA waits until addr answers name with the one address want; run
// wraps each query (to send it from a namespace).
func waitA(t *testing.T, run func(func()), addr, name, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var rcode int
		var ips []string
		var err error
		run(func() { rcode, ips, err = lookup(addr, name) })
		if err == nil && rcode == miekg.RcodeSuccess && len(ips) == 1 && ips[0] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s at %s: rcode %d %v %v, want %s", name, addr, rcode, ips, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func direct(fn func()) { fn() }

// fullZoneConfig sets every field of ZoneConfig and of what it holds.
func fullZoneConfig() ZoneConfig {
	return ZoneConfig{
		Domain: "example.internal",
		TTL:    7,
		Services: []Service{{
			Namespace: "prod", Name: "db", ClusterIPs: addrs("10.43.0.20", "fd00:43::20"), Headless: true,
			ExternalName: "db.example.org", Ports: []Port{{Name: "pg", Protocol: "UDP", Port: 5432}},
			Endpoints: []Endpoint{{IP: mustAddr("10.42.1.5"), Hostname: "db-0", Ports: []Port{{Name: "pg", Protocol: "SCTP", Port: 15432}}}},
		}},
		Pods:          []Pod{{Namespace: "prod", IPs: addrs("10.42.1.5", "fe80::1%eth0")}},
		Namespaces:    []string{"prod"},
		ReverseCIDRs:  []netip.Prefix{mustPrefix("10.43.0.0/16"), mustPrefix("fd00:43::/64")},
		NameserverIPs: addrs("10.43.0.10", "fd00:43::a"),
		Serial:        9,
	}
}

// checkAllSet fails for a zero value anywhere in v (every slice non-empty,
// every field set) and for unexported struct fields, which gob drops.
func checkAllSet(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	if _, ok := v.Interface().(encoding.BinaryMarshaler); ok {
		if v.IsZero() {
			t.Errorf("%s is zero", path)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() {
				t.Errorf("%s.%s is unexported: it would not reach the DNS child", path, f.Name)
				continue
			}
			checkAllSet(t, path+"."+f.Name, v.Field(i))
		}
	case reflect.Slice:
		if v.Len() == 0 {
			t.Errorf("%s is empty", path)
		}
		for i := 0; i < v.Len(); i++ {
			checkAllSet(t, fmt.Sprintf("%s[%d]", path, i), v.Index(i))
		}
	default:
		if v.IsZero() {
			t.Errorf("%s is zero", path)
		}
	}
}

func gobRoundTrip(t *testing.T, zc ZoneConfig) ZoneConfig {
	t.Helper()
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(newChildZone(zc)); err != nil {
		t.Fatal(err)
	}
	var m childZone
	if err := gob.NewDecoder(&b).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m.config()
}

// TestZoneConfigGob: every field of a ZoneConfig reaches the child as the
// agent had it, including nil against empty ReverseCIDRs.
func TestZoneConfigGob(t *testing.T) {
	full := fullZoneConfig()
	checkAllSet(t, "ZoneConfig", reflect.ValueOf(full))
	if got := gobRoundTrip(t, full); !reflect.DeepEqual(got, full) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, full)
	}
	if got := gobRoundTrip(t, testZoneConfig()); !reflect.DeepEqual(got, testZoneConfig()) {
		t.Errorf("round trip of the test zone:\n got %+v\nwant %+v", got, testZoneConfig())
	}
	none := full
	none.ReverseCIDRs = []netip.Prefix{}
	if got := gobRoundTrip(t, none).ReverseCIDRs; got == nil || len(got) != 0 {
		t.Errorf("empty ReverseCIDRs came back as %#v, want empty and not nil", got)
	}
	def := full
	def.ReverseCIDRs = nil
	if got := gobRoundTrip(t, def).ReverseCIDRs; got != nil {
		t.Errorf("nil ReverseCIDRs came back as %#v", got)
	}
	if n := len(NewZone(gobRoundTrip(t, none)).reverse); n != 0 {
		t.Errorf("zone without reverse CIDRs has %d reverse zones after the round trip", n)
	}
}

// childPipes runs RunChild in this process over pipes.
type childPipes struct {
	enc    *gob.Encoder
	in     *io.PipeWriter
	status chan childStatus // closed when out ends
	done   chan error
}

func startChildPipes(t *testing.T, ctx context.Context, cfg Config) *childPipes {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	p := &childPipes{enc: gob.NewEncoder(inW), in: inW, status: make(chan childStatus, 100), done: make(chan error, 1)}
	go func() {
		err := RunChild(ctx, cfg, inR, outW)
		outW.Close()
		p.done <- err
	}()
	go func() {
		defer close(p.status)
		dec := gob.NewDecoder(outR)
		for {
			var m childStatus
			if dec.Decode(&m) != nil {
				return
			}
			p.status <- m
		}
	}()
	t.Cleanup(func() { inW.Close(); outR.Close() })
	return p
}

// next returns the next status report.
func (p *childPipes) next(t *testing.T) (childStatus, bool) {
	t.Helper()
	select {
	case m, ok := <-p.status:
		return m, ok
	case <-time.After(5 * time.Second):
		t.Fatal("no status from the child in 5 s")
		return childStatus{}, false
	}
}

func (p *childPipes) send(t *testing.T, zc ZoneConfig) {
	t.Helper()
	if err := p.enc.Encode(newChildZone(zc)); err != nil {
		t.Fatal(err)
	}
}

// TestRunChild drives the child's loop over pipes: ready report, zones
// served as they arrive, stats every second, a last report and a clean
// return at EOF. On 127.0.0.1, and (as root) on 10.43.0.10:53 inside a
// namespace the test creates.
func TestRunChild(t *testing.T) {
	t.Run("loopback", func(t *testing.T) {
		addr := freeAddr(t)
		testRunChild(t, Config{Addrs: []string{addr}, UDPSockets: 1}, addr, direct)
		// The server is closed: its address is free again.
		udp, tcp, err := listenOnce(netip.MustParseAddrPort(addr), 1)
		if err != nil {
			t.Fatalf("address still in use after RunChild returned: %v", err)
		}
		udp[0].Close()
		tcp.Close()
	})
	t.Run("netns", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root: creates a network namespace")
		}
		ns := "/run/netns/" + testNetNS(t)
		in := func(fn func()) {
			if err := inNetNS(ns, func() error { fn(); return nil }); err != nil {
				t.Fatal(err)
			}
		}
		testRunChild(t, Config{Addrs: []string{"10.43.0.10:53"}, NetNS: ns, UDPSockets: 1}, "10.43.0.10:53", in)
		var err error
		in(func() { _, _, err = lookup("10.43.0.10:53", "web.default.svc.cluster.local.") })
		if err == nil {
			t.Error("the server still answers after RunChild returned")
		}
	})
}

func testRunChild(t *testing.T, cfg Config, addr string, run func(func())) {
	up := startUpstream(t)
	cfg.Upstreams = []string{up.addr}
	cfg.Log = testLog(t)
	p := startChildPipes(t, context.Background(), cfg)
	if m, ok := p.next(t); !ok || m.Stats != (Stats{}) {
		t.Fatalf("first report %+v (ok %v), want zero stats", m, ok)
	}
	// Listening, no zone yet: SERVFAIL.
	var rcode int
	var err error
	run(func() { rcode, _, err = lookup(addr, "web.default.svc.cluster.local.") })
	if err != nil || rcode != miekg.RcodeServerFailure {
		t.Errorf("before the first zone: rcode %d, %v; want SERVFAIL", rcode, err)
	}
	p.send(t, testZoneConfig())
	waitA(t, run, addr, "web.default.svc.cluster.local.", "10.43.0.20")
	run(func() { rcode, _, err = lookup(addr, "example.com.") })
	if err != nil || rcode != miekg.RcodeSuccess {
		t.Fatalf("example.com: rcode %d, %v", rcode, err)
	}
	for {
		m, ok := p.next(t) // one a second
		if !ok {
			t.Fatal("reports ended")
		}
		if m.Stats.Forwarded == 1 {
			break
		}
	}
	// A later zone replaces the first.
	zc := testZoneConfig()
	zc.Services[0].ClusterIPs = addrs("10.43.0.30")
	p.send(t, zc)
	waitA(t, run, addr, "web.default.svc.cluster.local.", "10.43.0.30")

	// EOF: a last report, then RunChild returns nil.
	p.in.Close()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("RunChild at EOF: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunChild did not return at EOF")
	}
	var last childStatus
	for m := range p.status {
		last = m
	}
	if last.Stats.Forwarded != 1 {
		t.Errorf("last report %+v", last)
	}
}

// TestRunChildEnds: a server that cannot start and a broken stream are
// errors; a cancelled context is a clean end.
func TestRunChildEnds(t *testing.T) {
	var out bytes.Buffer
	err := RunChild(context.Background(), Config{Addrs: []string{"localhost:53"}}, strings.NewReader(""), &out)
	if err == nil || out.Len() != 0 {
		t.Errorf("bad listen address: %v, %d bytes written", err, out.Len())
	}
	err = RunChild(context.Background(), Config{Addrs: []string{"192.0.2.1:53"}}, strings.NewReader(""), &out)
	if err == nil || !strings.Contains(err.Error(), "listening") || out.Len() != 0 {
		t.Errorf("address not on this host: %v, %d bytes written", err, out.Len())
	}

	err = RunChild(context.Background(), Config{Addrs: []string{freeAddr(t)}}, strings.NewReader("not gob"), &out)
	if err == nil || !strings.Contains(err.Error(), "reading zones") {
		t.Errorf("garbage on stdin: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	p := startChildPipes(t, ctx, Config{Addrs: []string{freeAddr(t)}})
	p.next(t)
	cancel()
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("RunChild after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunChild did not return after cancel")
	}
}

// childExited reports whether pid is gone or a zombie.
func childExited(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestChildProcess runs the server in a real child process (this test
// binary, see TestMain): it answers from the zone it is sent, survives
// threads of the agent exiting, is restarted after a kill -9 with the zone
// it had, and is stopped by Close.
func TestChildProcess(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t)
	addr := freeAddr(t)
	goroutines := runtime.NumGoroutine()
	c, err := StartChild(ChildConfig{Path: self, Env: []string{testRoleEnv + "=child", "GOMAXPROCS=1"},
		Addrs: []string{addr}, Upstreams: []string{up.addr}, UDPSockets: 1, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	pid := c.pid()
	if pid == 0 || pid == os.Getpid() {
		t.Fatalf("child pid %d", pid)
	}
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil || !bytes.Contains(env, []byte("\x00GOMAXPROCS=1\x00")) {
		t.Errorf("child environment lacks GOMAXPROCS=1 (%v)", err)
	}
	c.SetZoneConfig(testZoneConfig())
	waitA(t, direct, addr, "web.default.svc.cluster.local.", "10.43.0.20")
	if rcode, ips, err := lookup(addr, "example.com."); err != nil || rcode != miekg.RcodeSuccess || len(ips) != 1 {
		t.Fatalf("example.com: rcode %d %v %v", rcode, ips, err)
	}
	waitFor(t, "the child to report a forwarded query", func() bool { return c.Stats().Forwarded == 1 })

	// Threads of the agent that exit (a goroutine that ends locked to its
	// thread) do not take the child with them (Pdeathsig is per thread). A
	// loose guard: without supervise's LockOSThread the forking thread is
	// still often spared, being the one blocked waiting for the child.
	for i := 0; i < 100; i++ {
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread()
		}()
		<-done
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if childExited(pid) || c.pid() != pid {
		t.Fatal("the child died with a thread of the agent")
	}

	// kill -9: a new child, with the zone the first had.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new child", func() bool { p := c.pid(); return p != 0 && p != pid })
	waitA(t, direct, addr, "web.default.svc.cluster.local.", "10.43.0.20")
	if s := c.Stats(); s.Forwarded != 1 {
		t.Errorf("stats after the restart %+v, want the first child's counts kept", s)
	}
	zc := testZoneConfig()
	zc.Services[0].ClusterIPs = addrs("10.43.0.30")
	c.SetZoneConfig(zc)
	waitA(t, direct, addr, "web.default.svc.cluster.local.", "10.43.0.30")

	pid = c.pid()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if !childExited(pid) {
		t.Error("child still running after Close")
	}
	if _, _, err := lookup(addr, "web.default.svc.cluster.local."); err == nil {
		t.Error("still answered after Close")
	}
	c.Close()
	c.SetZoneConfig(zc) // harmless after Close
	waitFor(t, "the child's goroutines to end", func() bool { return runtime.NumGoroutine() <= goroutines })
}

// TestChildDiesWithAgent: kill -9 of the agent (a process running a Child)
// kills its DNS child too, so nothing answers from a stale zone.
func TestChildDiesWithAgent(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	agent := exec.Command(self)
	agent.Env = append(os.Environ(), testRoleEnv+"=agent", "SHOAL_DNS_TEST_LISTEN="+addr)
	agent.Stderr = testWriter{t}
	stdin, err := agent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the child's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		t.Fatalf("child pid %q", line)
	}
	waitA(t, direct, addr, "web.default.svc.cluster.local.", "10.43.0.20")
	if err := agent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	agent.Wait()
	waitFor(t, "the DNS child to die with its agent", func() bool { return childExited(pid) })
	if _, _, err := lookup(addr, "web.default.svc.cluster.local."); err == nil {
		t.Error("a DNS server still answers after its agent was killed")
	}
}

// TestStartChildFails: an executable that cannot run, a server that cannot
// listen (its error quoted) and a child that never reports are errors.
func TestStartChildFails(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := StartChild(ChildConfig{Path: "/nonexistent/shoal", Addrs: []string{"127.0.0.1:53"}}); err == nil {
		t.Error("missing executable: no error")
	}
	if _, err := StartChild(ChildConfig{Path: self}); err == nil {
		t.Error("no listen address: no error")
	}
	if _, err := StartChild(ChildConfig{Path: self, Addrs: []string{"127.0.0.1"}}); err == nil || !strings.Contains(err.Error(), "listen address") {
		t.Errorf("address without a port: %v", err)
	}
	_, err = StartChild(ChildConfig{Path: self, Env: []string{testRoleEnv + "=child"}, Addrs: []string{"192.0.2.1:53"}, Log: testLog(t)})
	if err == nil || !strings.Contains(err.Error(), "listening") {
		t.Errorf("address not on this host: %v; want the child's error", err)
	}
	t0 := time.Now()
	_, err = StartChild(ChildConfig{Path: "/bin/sh", Args: []string{"-c", "exec sleep 60"}, Addrs: []string{"127.0.0.1:53"},
		StartTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "not listening") {
		t.Errorf("silent child: %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("StartChild took %s with a 300ms timeout", d)
	}
}

func TestLineLevel(t *testing.T) {
	for line, want := range map[string]slog.Level{
		`level=ERROR msg="dns: serving stopped"`:         slog.LevelError,
		`time=2026-01-01T00:00:00Z level=INFO msg=x a=b`: slog.LevelInfo,
		`level=DEBUG msg=x`:                              slog.LevelDebug,
		`panic: runtime error`:                           slog.LevelWarn,
		`level=bogus`:                                    slog.LevelWarn,
	} {
		if got := lineLevel(line); got != want {
			t.Errorf("%q: %v, want %v", line, got, want)
		}
	}
}
