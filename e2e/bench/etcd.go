package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shoal-dev/shoal/node/localcluster"
)

// etcdPeer runs Debian's etcd 3.4 as a three-member cluster in the same
// network namespaces the Shoal cluster used (its agents stopped first), and
// drives puts through its HTTP/JSON gateway the way the Shoal benchmark
// drives ConfigMap creates (same machine, same run, same client pool), and
// through its native gRPC API.
type etcdPeer struct {
	c     *localcluster.Cluster
	procs []*exec.Cmd
	ips   []string
}

func startEtcd(ctx context.Context, c *localcluster.Cluster, dir string) (*etcdPeer, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("etcd not installed (apt install etcd-server)")
	}
	e := &etcdPeer{c: c}
	var initial []string
	for _, n := range c.Nodes() {
		initial = append(initial, fmt.Sprintf("%s=http://%s:2380", n.Name, n.IP))
		e.ips = append(e.ips, n.IP)
	}
	for _, n := range c.Nodes() {
		data := filepath.Join(dir, "etcd-"+n.Name)
		cmd := c.NodeCommand(context.Background(), n.Name, bin,
			"--name", n.Name, "--data-dir", data,
			"--listen-peer-urls", "http://"+n.IP+":2380", "--initial-advertise-peer-urls", "http://"+n.IP+":2380",
			"--listen-client-urls", "http://"+n.IP+":2379", "--advertise-client-urls", "http://"+n.IP+":2379",
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new", "--log-level", "error")
		log, err := os.Create(data + ".log")
		if err != nil {
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			e.stop()
			return nil, err
		}
		e.procs = append(e.procs, cmd)
	}
	hc := e.client(1)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := e.leader(ctx, hc); err == nil {
			return e, nil
		}
		if time.Now().After(deadline) {
			e.stop()
			return nil, fmt.Errorf("etcd cluster did not elect a leader")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *etcdPeer) stop() {
	for _, p := range e.procs {
		if p.Process != nil {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}
}

func (e *etcdPeer) client(conns int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: e.c.DialContext, MaxIdleConns: 2 * conns, MaxIdleConnsPerHost: 2 * conns}}
}

func (e *etcdPeer) post(ctx context.Context, hc *http.Client, ip, path string, body any, out any) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ip+":2379"+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %d %s", path, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// leader returns the IPs of the leader and of one follower.
func (e *etcdPeer) leader(ctx context.Context, hc *http.Client) ([2]string, error) {
	var out [2]string
	for _, ip := range e.ips {
		var st struct {
			Header struct {
				MemberID string `json:"member_id"`
			} `json:"header"`
			Leader string `json:"leader"`
		}
		if err := e.post(ctx, hc, ip, "/v3/maintenance/status", map[string]any{}, &st); err != nil {
			return out, err
		}
		if st.Leader == "" || st.Leader == "0" {
			return out, fmt.Errorf("no leader yet")
		}
		if st.Header.MemberID == st.Leader {
			out[0] = ip
		} else if out[1] == "" {
			out[1] = ip
		}
	}
	if out[0] == "" || out[1] == "" {
		return out, fmt.Errorf("no leader yet")
	}
	return out, nil
}

// load puts 256-byte values through ip from clients goroutines.
func (e *etcdPeer) load(ctx context.Context, ip string, clients int, dur time.Duration) (loadResult, error) {
	hc := e.client(clients)
	defer hc.Transport.(*http.Transport).CloseIdleConnections()
	value := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("x"), 256))
	return runLoad(clients, dur, func(seq int64) error {
		key := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "k-%d", seq))
		return e.post(ctx, hc, ip, "/v3/kv/put", map[string]string{"key": key, "value": value}, nil)
	})
}

// rawCodec hands gRPC protobuf bytes encoded by hand: the bench speaks
// etcd's native KV API without importing etcd's client module (whose gRPC
// version would fight containerd's).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append((*v.(*[]byte))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// etcdGRPCConns is how many gRPC connections the native load shares (etcd's
// own benchmark tool multiplexes its clients over --conns connections).
const etcdGRPCConns = 8

// loadGRPC puts 256-byte values through ip over etcd's native gRPC API
// (etcdserverpb.KV/Put), the protocol the etcd figures came from.
func (e *etcdPeer) loadGRPC(ctx context.Context, ip string, clients int, dur time.Duration) (loadResult, error) {
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range min(clients, etcdGRPCConns) {
		cc, err := grpc.DialContext(ctx, ip+":2379",
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return e.c.DialContext(ctx, "tcp", addr)
			}),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			return loadResult{}, err
		}
		conns = append(conns, cc)
	}
	value := bytes.Repeat([]byte("x"), 256)
	return runLoad(clients, dur, func(seq int64) error {
		// PutRequest{key = 1, value = 2}
		req := protowire.AppendTag(nil, 1, protowire.BytesType)
		req = protowire.AppendBytes(req, fmt.Appendf(nil, "g-%d", seq))
		req = protowire.AppendTag(req, 2, protowire.BytesType)
		req = protowire.AppendBytes(req, value)
		var resp []byte
		return conns[int(seq)%len(conns)].Invoke(ctx, "/etcdserverpb.KV/Put", &req, &resp)
	})
}
