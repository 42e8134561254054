package localcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors callers can match with errors.Is.
var (
	ErrAlreadyUp   = errors.New("already up")
	ErrUnknownNode = errors.New("unknown node")
	ErrNotRunning  = errors.New("agent not running")
	ErrRunning     = errors.New("agent already running")
)

const (
	stateFile      = "cluster.json"
	kubeconfigFile = "kubeconfig"
	stateVersion   = 1
)

// NodeInfo describes one node. It is also the node's record in cluster.json.
type NodeInfo struct {
	Name      string `json:"name"`      // "n1", "n2", …: also the agent's --node-name
	Index     int    `json:"index"`     // I in "<cluster>-nI" and "vethI"
	Namespace string `json:"namespace"` // "<cluster>-nI"
	IP        string `json:"ip"`        // current address of eth0 and --advertise-addr
	DataDir   string `json:"dataDir"`   // DIR/nI/data
	LogPath   string `json:"logPath"`   // DIR/nI/agent.log
	PID       int    `json:"pid"`       // last agent started; 0 if never
	// StartTime is the process start time of PID (clock ticks since boot,
	// from /proc/PID/stat) so a reused PID is never mistaken for the agent.
	StartTime uint64 `json:"startTime,omitempty"`
}

// State is what DIR/cluster.json holds.
type State struct {
	Version      int           `json:"version"`
	Name         string        `json:"name"`
	Dir          string        `json:"dir"`
	Subnet       string        `json:"subnet"`
	LanNamespace string        `json:"lanNamespace"`
	BridgeIP     string        `json:"bridgeIP"`
	Binary       string        `json:"binary"`
	AgentArgs    []string      `json:"agentArgs,omitempty"`
	ReadyTimeout time.Duration `json:"readyTimeout"`
	Nodes        []NodeInfo    `json:"nodes"`
}

func (s State) clone() State {
	s.AgentArgs = append([]string(nil), s.AgentArgs...)
	s.Nodes = append([]NodeInfo(nil), s.Nodes...)
	return s
}

// Cluster is a local cluster, started by Up or found by Load.
type Cluster struct {
	mu    sync.Mutex // guards the fields below
	st    State
	out   io.Writer
	creds *apiCreds    // from node 1's kubeconfig; nil until known
	hc    *http.Client // built from creds
}

// Up builds the topology, starts node 1 (which creates the cluster), waits
// for its /readyz, joins nodes 2..N each with a fresh token, waits until all
// N Nodes are Ready, and writes DIR/kubeconfig and DIR/cluster.json. The
// agents keep running after the calling process exits.
//
// On failure Up tears down whatever it built and returns an error that ends
// with the tail of every agent log.
func Up(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("shoal local needs root (it creates network namespaces)")
	}
	if err := prepareDir(cfg); err != nil {
		return nil, err
	}
	c := newCluster(cfg)
	if err := c.up(ctx, cfg.Nodes); err != nil {
		logs := c.logTails(30)
		if derr := c.Down(); derr != nil {
			err = fmt.Errorf("%w\n(cleaning up: %v)", err, derr)
		}
		return nil, fmt.Errorf("%w%s", err, logs)
	}
	return c, nil
}

// prepareDir refuses to run over a cluster that is up, clears a stale one
// and creates DIR.
func prepareDir(cfg Config) error {
	nss, err := clusterNamespaces(cfg.Name)
	if err != nil {
		return err
	}
	if len(nss) > 0 {
		where := "dir unknown; run: shoal local down --name " + cfg.Name
		if old, err := Load(cfg.Dir); err == nil && old.st.Name == cfg.Name {
			where = "dir " + cfg.Dir + "; run: shoal local down --dir " + cfg.Dir
		}
		return fmt.Errorf("cluster %q is %w (%s; namespaces %s)", cfg.Name, ErrAlreadyUp, where, strings.Join(nss, " "))
	}
	ents, err := os.ReadDir(cfg.Dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	case len(ents) == 0:
	default:
		old, lerr := Load(cfg.Dir)
		if lerr != nil {
			return fmt.Errorf("dir %s is not empty and holds no local cluster", cfg.Dir)
		}
		for _, n := range old.Nodes() {
			if procState(n.PID, n.StartTime) != ProcExited {
				return fmt.Errorf("cluster %q in %s is %w: agent %s (pid %d) is running; run: shoal local down --dir %s",
					old.st.Name, cfg.Dir, ErrAlreadyUp, n.Name, n.PID, cfg.Dir)
			}
		}
		fmt.Fprintf(cfg.Stdout, "removing stale cluster %q from %s\n", old.st.Name, cfg.Dir)
		if err := old.Down(); err != nil {
			return fmt.Errorf("removing stale cluster in %s: %w", cfg.Dir, err)
		}
	}
	return os.MkdirAll(cfg.Dir, 0o755)
}

func newCluster(cfg Config) *Cluster {
	subnet, _ := parseSubnet(cfg.Subnet) // validated
	st := State{
		Version:      stateVersion,
		Name:         cfg.Name,
		Dir:          cfg.Dir,
		Subnet:       cfg.Subnet,
		LanNamespace: lanNamespace(cfg.Name),
		BridgeIP:     hostAddr(subnet, bridgeHost).String(),
		Binary:       cfg.Binary,
		AgentArgs:    cfg.AgentArgs,
		ReadyTimeout: cfg.ReadyTimeout,
	}
	c := &Cluster{st: st, out: cfg.Stdout}
	for i := 1; i <= cfg.Nodes; i++ {
		c.st.Nodes = append(c.st.Nodes, c.nodeRecordLocked(i, hostAddr(subnet, i)))
	}
	return c
}

func (c *Cluster) nodeRecordLocked(i int, ip netip.Addr) NodeInfo {
	name := "n" + strconv.Itoa(i)
	return NodeInfo{
		Name:      name,
		Index:     i,
		Namespace: nodeNamespace(c.st.Name, i),
		IP:        ip.String(),
		DataDir:   filepath.Join(c.st.Dir, name, "data"),
		LogPath:   filepath.Join(c.st.Dir, name, "agent.log"),
	}
}

func (c *Cluster) up(ctx context.Context, nodes int) error {
	start := time.Now()
	c.mu.Lock()
	st := c.st.clone()
	err := c.saveLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	c.progressf("creating namespaces %s and %s..%s (subnet %s)\n", st.LanNamespace,
		st.Nodes[0].Namespace, st.Nodes[len(st.Nodes)-1].Namespace, st.Subnet)
	if err := c.setupTopology(ctx); err != nil {
		return err
	}

	first := st.Nodes[0]
	c.progressf("starting %s (%s): new cluster\n", first.Name, first.IP)
	if err := c.startAgent(first.Name, nil); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, st.ReadyTimeout)
	defer cancel()
	kc, err := c.waitFirst(wctx, first)
	if err != nil {
		return err
	}
	c.progressf("%s ready after %s\n", first.Name, time.Since(start).Round(100*time.Millisecond))

	for _, n := range st.Nodes[1:] {
		token, err := c.token(ctx, first)
		if err != nil {
			return err
		}
		c.progressf("starting %s (%s): joining %s\n", n.Name, n.IP, first.IP)
		join := []string{"--join", net.JoinHostPort(first.IP, strconv.Itoa(APIPort)), "--token", token}
		if err := c.startAgent(n.Name, join); err != nil {
			return err
		}
	}
	var names []string
	for _, n := range st.Nodes {
		names = append(names, n.Name)
	}
	wctx2, cancel2 := context.WithTimeout(ctx, st.ReadyTimeout)
	defer cancel2()
	if err := c.WaitReady(wctx2, names...); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(st.Dir, kubeconfigFile), kc, 0o600); err != nil {
		return err
	}
	c.progressf("%d node(s) Ready after %s\n", nodes, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// setupTopology creates the lan namespace and every node namespace in the
// state. It does not start agents.
func (c *Cluster) setupTopology(ctx context.Context) error {
	c.mu.Lock()
	st := c.st.clone()
	c.mu.Unlock()
	subnet, err := parseSubnet(st.Subnet)
	if err != nil {
		return err
	}
	bridge := netip.MustParseAddr(st.BridgeIP)
	if err := setupLAN(ctx, st.LanNamespace, netip.PrefixFrom(bridge, subnet.Bits())); err != nil {
		return err
	}
	for _, n := range st.Nodes {
		if err := c.setupNode(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) setupNode(ctx context.Context, n NodeInfo) error {
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		return err
	}
	subnet, err := parseSubnet(c.State().Subnet)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(n.IP)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	gw := netip.MustParseAddr(c.State().BridgeIP)
	return setupHost(ctx, c.State().LanNamespace, n.Namespace, n.Index, netip.PrefixFrom(ip, subnet.Bits()), gw)
}

// waitFirst waits until node 1 hands out a kubeconfig and answers /readyz;
// it returns the kubeconfig and keeps its credentials for later checks.
func (c *Cluster) waitFirst(ctx context.Context, n NodeInfo) ([]byte, error) {
	var last error
	for {
		if err := c.checkAlive(n.Name); err != nil {
			return nil, err
		}
		kc, err := c.nodeOutput(ctx, n, "kubeconfig", "--data-dir", n.DataDir)
		if err == nil {
			var creds apiCreds
			if creds, err = parseKubeconfig(kc); err == nil {
				c.setCreds(creds)
				if err = readyz(ctx, c.client(), n.IP); err == nil {
					return kc, nil
				}
			}
		}
		last = err
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return nil, fmt.Errorf("waiting for %s to create the cluster: %w (last: %v)", n.Name, err, last)
		}
	}
}

// token asks the agent on node n for a fresh join token.
func (c *Cluster) token(ctx context.Context, n NodeInfo) (string, error) {
	var last error
	for i := 0; i < 20; i++ {
		out, err := c.nodeOutput(ctx, n, "token", "create", "--data-dir", n.DataDir)
		if err == nil {
			tok := strings.TrimSpace(string(out))
			if tok != "" && !strings.ContainsAny(tok, " \n\t") {
				return tok, nil
			}
			err = fmt.Errorf("token create printed %q, want one token", tok)
		}
		last = err
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			break
		}
	}
	return "", fmt.Errorf("getting a join token from %s: %w", n.Name, last)
}

// nodeOutput runs `shoal ARGS…` in node n's namespace and returns stdout.
func (c *Cluster) nodeOutput(ctx context.Context, n NodeInfo, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := c.NodeCommand(ctx, n.Name, c.State().Binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("shoal %s on %s: %w: %s", strings.Join(args, " "), n.Name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// WaitReady waits until each named node answers /readyz and is listed Ready
// in /api/v1/nodes (asked of the first node that answers /readyz). It fails
// early when one of their agents exits.
func (c *Cluster) WaitReady(ctx context.Context, names ...string) error {
	var want []NodeInfo
	for _, name := range names {
		n, err := c.node(name)
		if err != nil {
			return err
		}
		want = append(want, n)
	}
	hc, err := c.apiClient()
	if err != nil {
		return err
	}
	reported := map[string]bool{}
	var last error
	for {
		last = nil
		for _, n := range want {
			if err := c.checkAlive(n.Name); err != nil {
				return err
			}
			n, _ = c.node(n.Name) // the address may have changed
			if err := readyz(ctx, hc, n.IP); err != nil {
				if last == nil {
					last = fmt.Errorf("%s: %w", n.Name, err)
				}
				continue
			}
			if !reported[n.Name] {
				reported[n.Name] = true
				c.progressf("%s (%s) /readyz ok\n", n.Name, n.IP)
			}
		}
		if last == nil {
			last = c.nodesReady(ctx, hc, names)
			if last == nil {
				return nil
			}
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for %s to be ready: %w (last: %v)", strings.Join(names, ", "), err, last)
		}
	}
}

// nodesReady asks the first node that answers for the NodeList.
func (c *Cluster) nodesReady(ctx context.Context, hc *http.Client, names []string) error {
	var errs []error
	for _, n := range c.Nodes() {
		if procState(n.PID, n.StartTime) != ProcRunning {
			continue
		}
		ready, err := readyNodes(ctx, hc, n.IP)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if m := missing(names, ready); len(m) > 0 {
			return fmt.Errorf("not Ready according to %s: %s", n.Name, strings.Join(m, ", "))
		}
		return nil
	}
	if len(errs) == 0 {
		return errors.New("no agent is running")
	}
	return errors.Join(errs...)
}

// Ready checks once that node name answers /readyz.
func (c *Cluster) Ready(ctx context.Context, name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	hc, err := c.apiClient()
	if err != nil {
		return err
	}
	return readyz(ctx, hc, n.IP)
}

// Load finds the cluster whose state is in dir.
func Load(dir string) (*Cluster, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("no local cluster in %s: %w", dir, err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, stateFile), err)
	}
	if st.Version != stateVersion || st.Name == "" || st.LanNamespace == "" {
		return nil, fmt.Errorf("reading %s: unsupported state (version %d)", filepath.Join(dir, stateFile), st.Version)
	}
	if _, err := parseSubnet(st.Subnet); err != nil {
		return nil, err
	}
	st.Dir = dir
	return &Cluster{st: st, out: io.Discard}, nil
}

// SetProgress sets where progress messages (AddNode, Down) go.
func (c *Cluster) SetProgress(w io.Writer) {
	if w == nil {
		w = io.Discard
	}
	c.mu.Lock()
	c.out = w
	c.mu.Unlock()
}

func (c *Cluster) progressf(format string, args ...any) {
	c.mu.Lock()
	w := c.out
	c.mu.Unlock()
	fmt.Fprintf(w, format, args...)
}

// saveLocked writes DIR/cluster.json.
func (c *Cluster) saveLocked() error {
	b, err := json.MarshalIndent(c.st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(c.st.Dir, stateFile), append(b, '\n'), 0o644)
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// State returns a copy of the persisted state.
func (c *Cluster) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.clone()
}

// Nodes returns a copy of the node records, in index order.
func (c *Cluster) Nodes() []NodeInfo {
	return c.State().Nodes
}

// Node returns the record of one node; see node for the names accepted.
func (c *Cluster) Node(name string) (NodeInfo, error) {
	return c.node(name)
}

// node finds a node by name ("n2"), index ("2") or namespace.
func (c *Cluster) node(name string) (NodeInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, err := c.nodeIndexLocked(name)
	if err != nil {
		return NodeInfo{}, err
	}
	return c.st.Nodes[i], nil
}

func (c *Cluster) nodeIndexLocked(name string) (int, error) {
	for i, n := range c.st.Nodes {
		if n.Name == name || n.Namespace == name || strconv.Itoa(n.Index) == name {
			return i, nil
		}
	}
	return -1, fmt.Errorf("%w %q in cluster %q", ErrUnknownNode, name, c.st.Name)
}

// KubeconfigPath is DIR/kubeconfig: an admin kubeconfig for node 1's API.
func (c *Cluster) KubeconfigPath() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return filepath.Join(c.st.Dir, kubeconfigFile)
}

func (c *Cluster) setCreds(creds apiCreds) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.creds != nil && c.creds.server == creds.server {
		return
	}
	c.creds = &creds
	c.hc = apiClient(creds, c.DialContext)
}

func (c *Cluster) client() *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hc
}

// apiClient returns the HTTP client for the cluster API, reading
// DIR/kubeconfig if no credentials are known yet.
func (c *Cluster) apiClient() (*http.Client, error) {
	if hc := c.client(); hc != nil {
		return hc, nil
	}
	b, err := os.ReadFile(c.KubeconfigPath())
	if err != nil {
		return nil, fmt.Errorf("cluster API credentials: %w", err)
	}
	creds, err := parseKubeconfig(b)
	if err != nil {
		return nil, err
	}
	c.setCreds(creds)
	return c.client(), nil
}

// HTTPClient returns an HTTP client for the cluster API: it dials from the
// lan namespace, trusts the cluster CA and presents the admin client
// certificate of DIR/kubeconfig.
func (c *Cluster) HTTPClient() (*http.Client, error) {
	return c.apiClient()
}

// DialContext dials addr (an IP address and port) from inside the lan
// namespace, so a process in the root namespace reaches node addresses
// without any route in the root namespace. Use it as the Dial of an HTTP
// transport or a client-go rest.Config.
func (c *Cluster) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return dialIn(ctx, c.State().LanNamespace, network, addr)
}

// Command returns a command that runs name inside the lan namespace (via
// `ip netns exec`) with KUBECONFIG set to the cluster's kubeconfig.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, ipCmd(), append([]string{"netns", "exec", c.State().LanNamespace, name}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.KubeconfigPath())
	return cmd
}

// NodeCommand returns a command that runs name inside node's namespace. For
// an unknown node the command fails to start.
func (c *Cluster) NodeCommand(ctx context.Context, node, name string, args ...string) *exec.Cmd {
	n, err := c.node(node)
	cmd := exec.CommandContext(ctx, ipCmd(), append([]string{"netns", "exec", n.Namespace, name}, args...)...)
	if err != nil {
		cmd.Err = err
	}
	return cmd
}

// ProcessState tells whether node's agent is running, stopped (SIGSTOP) or
// exited.
func (c *Cluster) ProcessState(name string) (string, error) {
	n, err := c.node(name)
	if err != nil {
		return "", err
	}
	return procState(n.PID, n.StartTime), nil
}

func (c *Cluster) checkAlive(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if procState(n.PID, n.StartTime) == ProcExited {
		return fmt.Errorf("agent %s (pid %d) exited; log %s:\n%s", n.Name, n.PID, n.LogPath, indent(tail(n.LogPath, 20)))
	}
	return nil
}

// startAgent starts `shoal agent` for node name in its namespace, in a new
// session, appending stdout and stderr to its log, and records its PID once
// `ip netns exec` has exec'd the agent.
func (c *Cluster) startAgent(name string, extra []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, err := c.nodeIndexLocked(name)
	if err != nil {
		return err
	}
	n := c.st.Nodes[i]
	if s := procState(n.PID, n.StartTime); s != ProcExited {
		return fmt.Errorf("node %s: %w (pid %d, %s)", n.Name, ErrRunning, n.PID, s)
	}
	// Nothing leaves a local cluster's namespaces: images come from the
	// nodes only (shoal image import on one, peers pull from it).
	args := []string{"agent", "--data-dir", n.DataDir, "--advertise-addr", n.IP, "--node-name", n.Name, "--registry-pull=false",
		"--dns-upstream=none"} // nothing outside the namespaces; AgentArgs may name a server inside them
	args = append(args, extra...)
	args = append(args, c.st.AgentArgs...)

	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(n.LogPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "==== %s shoal local: %s %s\n", time.Now().Format(time.RFC3339), c.st.Binary, strings.Join(redactToken(args), " "))
	// nsenter enters the node's network namespace only: the agent stays in
	// the machine's mount namespace, so the pod namespaces and volumes it
	// mounts outlive it and a restarted agent finds them (ip netns exec
	// would give every start a private mount namespace of its own).
	cmd := exec.Command(nsenterCmd(), append([]string{"--net=" + filepath.Join(netnsDir, n.Namespace), "--", c.st.Binary}, args...)...)
	cmd.Dir = filepath.Dir(n.DataDir)
	cmd.Stdout, cmd.Stderr = logf, logf // an *os.File: the agent writes to it directly
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fmt.Errorf("starting agent %s: %w", n.Name, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { // reap it if it dies while this process lives
		cmd.Wait()
		close(exited)
	}()
	st, err := readStat(pid)
	if err != nil {
		<-exited
		return fmt.Errorf("agent %s exited at once; log %s:\n%s", n.Name, n.LogPath, indent(tail(n.LogPath, 20)))
	}
	// nsenter execs the agent in place: wait for it so that the recorded
	// PID is the agent's.
	deadline := time.Now().Add(10 * time.Second)
	for {
		argv, err := cmdline(pid)
		if err == nil && len(argv) > 0 && argv[0] == c.st.Binary {
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("agent %s exited at once; log %s:\n%s", n.Name, n.LogPath, indent(tail(n.LogPath, 20)))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Errorf("agent %s: pid %d never became %s (cmdline %q)", n.Name, pid, c.st.Binary, argv)
		}
	}
	n.PID, n.StartTime = pid, st.startTime
	c.st.Nodes[i] = n
	return c.saveLocked()
}

func redactToken(args []string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "--token" {
			out[i+1] = "<redacted>"
		}
	}
	return out
}

func indent(s string) string {
	if s == "" {
		return "    (empty)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// logTails returns the tail of every agent log, for an error message.
func (c *Cluster) logTails(lines int) string {
	var b strings.Builder
	for _, n := range c.Nodes() {
		if n.PID == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n--- %s (%s) %s:\n%s", n.Name, n.IP, n.LogPath, indent(tail(n.LogPath, lines)))
	}
	return b.String()
}

// Start starts node name's agent again from its data dir, without --join,
// advertising its current IP. It returns once the agent process runs; use
// WaitReady to wait for it to serve.
func (c *Cluster) Start(name string) error {
	return c.startAgent(name, nil)
}

// Kill sends SIGKILL to node name's agent and waits for it to exit. An agent
// that is not running is success.
func (c *Cluster) Kill(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if err := signalProc(n.PID, n.StartTime, syscall.SIGKILL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return waitExit(ctx, map[int]uint64{n.PID: n.StartTime})
}

// Stop sends SIGSTOP to node name's agent (it freezes; its connections stay
// open) and waits until it is stopped.
func (c *Cluster) Stop(name string) error {
	return c.signalRunning(name, syscall.SIGSTOP, ProcStopped)
}

// Cont sends SIGCONT to node name's agent and waits until it runs again.
func (c *Cluster) Cont(name string) error {
	return c.signalRunning(name, syscall.SIGCONT, ProcRunning)
}

func (c *Cluster) signalRunning(name string, sig syscall.Signal, want string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if procState(n.PID, n.StartTime) == ProcExited {
		return fmt.Errorf("node %s: %w", n.Name, ErrNotRunning)
	}
	if err := signalProc(n.PID, n.StartTime, sig); err != nil {
		return err
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		switch s := procState(n.PID, n.StartTime); {
		case s == want:
			return nil
		case s == ProcExited:
			return fmt.Errorf("node %s: %w", n.Name, ErrNotRunning)
		case time.Now().After(deadline):
			return fmt.Errorf("node %s: still %s after %v", n.Name, s, sig)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Partition drops every packet in and out of node name's LAN interface
// (iptables DROP first in INPUT and OUTPUT inside its namespace); loopback
// is untouched. Idempotent.
func (c *Cluster) Partition(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if err := partition(context.Background(), n.Namespace, c.State().BridgeIP); err != nil {
		return fmt.Errorf("partitioning %s: %w", n.Name, err)
	}
	return nil
}

// Heal removes the rules Partition added. Idempotent.
func (c *Cluster) Heal(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if err := heal(context.Background(), n.Namespace, c.State().BridgeIP); err != nil {
		return fmt.Errorf("healing %s: %w", n.Name, err)
	}
	return nil
}

// SetAddr moves node name to ip (inside the subnet, unused, not the bridge's
// .254): eth0 gets the new address and loses the old one. A running agent is
// not told; the next Start advertises the new address. If DIR/kubeconfig
// pointed at the old address it is rewritten to the new one.
func (c *Cluster) SetAddr(name, ip string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, err := c.nodeIndexLocked(name)
	if err != nil {
		return err
	}
	n := c.st.Nodes[i]
	subnet, err := parseSubnet(c.st.Subnet)
	if err != nil {
		return err
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("set address of %s: %w", n.Name, err)
	}
	if h := addr.As4()[3]; !subnet.Contains(addr) || h == 0 || h == 255 || h == bridgeHost {
		return fmt.Errorf("set address of %s: %s is not a host address in %s (other than the bridge's .%d)", n.Name, ip, subnet, bridgeHost)
	}
	for _, o := range c.st.Nodes {
		if o.IP == addr.String() && o.Name != n.Name {
			return fmt.Errorf("set address of %s: %s is %s's address", n.Name, ip, o.Name)
		}
	}
	old := n.IP
	gw := netip.MustParseAddr(c.st.BridgeIP)
	if err := setAddrIn(n.Namespace, netip.PrefixFrom(addr, subnet.Bits()), gw); err != nil {
		return fmt.Errorf("set address of %s: %w", n.Name, err)
	}
	n.IP = addr.String()
	c.st.Nodes[i] = n
	if err := c.saveLocked(); err != nil {
		return err
	}
	return c.rewriteKubeconfigLocked(old, n.IP)
}

// rewriteKubeconfigLocked points DIR/kubeconfig at newIP if it pointed at
// oldIP, and forgets cached credentials that used the old server.
func (c *Cluster) rewriteKubeconfigLocked(oldIP, newIP string) error {
	path := filepath.Join(c.st.Dir, kubeconfigFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	from := []byte("https://" + net.JoinHostPort(oldIP, strconv.Itoa(APIPort)))
	if !bytes.Contains(b, from) {
		return nil
	}
	to := []byte("https://" + net.JoinHostPort(newIP, strconv.Itoa(APIPort)))
	if err := writeFileAtomic(path, bytes.ReplaceAll(b, from, to), 0o600); err != nil {
		return err
	}
	if c.creds != nil {
		creds := *c.creds
		creds.server = string(to)
		c.creds = &creds
	}
	return nil
}

// AddNode creates one more node namespace, gets a fresh token from the first
// running node that answers /readyz, joins the new node through it and waits
// until the new node is Ready (bounded by the cluster's ReadyTimeout).
func (c *Cluster) AddNode(ctx context.Context) (NodeInfo, error) {
	c.mu.Lock()
	subnet, err := parseSubnet(c.st.Subnet)
	if err != nil {
		c.mu.Unlock()
		return NodeInfo{}, err
	}
	idx, used := 0, map[int]bool{0: true, 255: true, bridgeHost: true}
	for _, n := range c.st.Nodes {
		idx = max(idx, n.Index)
		used[int(netip.MustParseAddr(n.IP).As4()[3])] = true
	}
	idx++
	host := idx
	for host < 255 && used[host] {
		host++
	}
	if host >= 255 {
		for host = 1; used[host]; host++ {
			if host == 254 {
				c.mu.Unlock()
				return NodeInfo{}, fmt.Errorf("no free address left in %s", subnet)
			}
		}
	}
	n := c.nodeRecordLocked(idx, hostAddr(subnet, host))
	c.st.Nodes = append(c.st.Nodes, n)
	err = c.saveLocked()
	timeout := c.st.ReadyTimeout
	c.mu.Unlock()
	if err != nil {
		return n, err
	}

	var sponsor *NodeInfo
	hc, err := c.apiClient()
	if err != nil {
		return n, err
	}
	for _, o := range c.Nodes() {
		if o.Name != n.Name && procState(o.PID, o.StartTime) == ProcRunning && readyz(ctx, hc, o.IP) == nil {
			sponsor = &o
			break
		}
	}
	if sponsor == nil {
		return n, errors.New("adding a node: no running node answers /readyz")
	}
	c.progressf("creating namespace %s\n", n.Namespace)
	if err := c.setupNode(ctx, n); err != nil {
		return n, err
	}
	token, err := c.token(ctx, *sponsor)
	if err != nil {
		return n, err
	}
	c.progressf("starting %s (%s): joining %s\n", n.Name, n.IP, sponsor.IP)
	join := []string{"--join", net.JoinHostPort(sponsor.IP, strconv.Itoa(APIPort)), "--token", token}
	if err := c.startAgent(n.Name, join); err != nil {
		return n, err
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.WaitReady(wctx, n.Name); err != nil {
		return n, err
	}
	return c.node(n.Name)
}

// Down stops every agent (SIGTERM; SIGKILL after StopGrace), kills whatever
// still runs in the cluster's namespaces and its descendants, deletes the
// namespaces (with the bridge and veths in them) and removes DIR. Best
// effort: it goes on after an error and returns them all. Idempotent.
func (c *Cluster) Down() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error

	agents := map[int]uint64{}
	for _, n := range c.st.Nodes {
		if procState(n.PID, n.StartTime) == ProcExited {
			continue
		}
		agents[n.PID] = n.StartTime
		if err := signalProc(n.PID, n.StartTime, syscall.SIGTERM); err != nil {
			errs = append(errs, err)
		}
		signalProc(n.PID, n.StartTime, syscall.SIGCONT) // a stopped agent must run to exit
	}
	if len(agents) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), StopGrace)
		if waitExit(ctx, agents) != nil {
			fmt.Fprintf(c.out, "agents still running after %s: SIGKILL\n", StopGrace)
			if err := killAll(agents); err != nil {
				errs = append(errs, err)
			}
		}
		cancel()
	}

	namespaces := []string{c.st.LanNamespace}
	for _, n := range c.st.Nodes {
		namespaces = append(namespaces, n.Namespace)
	}
	if more, err := clusterNamespaces(c.st.Name); err == nil {
		namespaces = append(namespaces, more...)
	}
	if err := purgeNamespaces(namespaces); err != nil {
		errs = append(errs, err)
	}

	// Pod namespaces, secret and memory volumes the agents mounted.
	if err := unmountUnder(c.st.Dir); err != nil {
		errs = append(errs, err)
	}
	// The cgroups of the pods the agents ran (their processes are dead).
	for _, n := range c.st.Nodes {
		if err := removePodCgroups(n.DataDir); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range c.st.Nodes {
		if err := os.RemoveAll(filepath.Dir(n.DataDir)); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range []string{kubeconfigFile, kubeconfigFile + ".tmp", stateFile, stateFile + ".tmp"} {
		if err := os.Remove(filepath.Join(c.st.Dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(c.st.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing %s: %w", c.st.Dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster %q down: %w", c.st.Name, err)
	}
	return nil
}

// purgeNamespaces kills every process in the namespaces (and its
// descendants), then deletes the namespaces, lan last.
func purgeNamespaces(namespaces []string) error {
	var errs []error
	procs, err := processesIn(namespaces)
	if err != nil {
		errs = append(errs, err)
	} else if err := killAll(procs); err != nil {
		errs = append(errs, err)
	}
	seen := map[string]bool{}
	var lan []string
	for _, ns := range namespaces {
		if seen[ns] {
			continue
		}
		seen[ns] = true
		if strings.HasSuffix(ns, "-lan") {
			lan = append(lan, ns)
			continue
		}
		if err := delNetns(context.Background(), ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range lan {
		if err := delNetns(context.Background(), ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Purge removes what is left of a cluster whose DIR is lost: it kills every
// process in the namespaces "<name>-lan" and "<name>-nI" (and their
// descendants) and deletes those namespaces.
func Purge(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("cluster name %q is not valid", name)
	}
	nss, err := clusterNamespaces(name)
	if err != nil || len(nss) == 0 {
		return err
	}
	return purgeNamespaces(nss)
}

// Namespaces lists the existing network namespaces of cluster name.
func Namespaces(name string) ([]string, error) {
	return clusterNamespaces(name)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
