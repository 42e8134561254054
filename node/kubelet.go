package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/agent"
	"github.com/shoal-dev/shoal/node/apiserver"
	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/containerd"
	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/podnet"
)

const (
	podnetDir = "podnet"
	agentDir  = "agent"
	// internalPodsPath is where a node serves the streams of its own pods
	// to the other nodes (mTLS, node certificates only).
	internalPodsPath = "/internal/v1/pods/"
)

// runAgent runs the kubelet role once the node is registered and the
// leader has given it a pod CIDR. It returns when ctx ends.
func (n *Node) runAgent(ctx context.Context) {
	if n.runtime == nil {
		n.log.Warn("no container runtime: this node runs no pods")
		return
	}
	cidr, err := n.waitPodCIDR(ctx)
	if err != nil {
		return
	}
	ncfg := podnet.DefaultConfig()
	ncfg.PodCIDR = cidr
	ncfg.StateDir = n.dir.path(podnetDir)
	ncfg.Mode = n.cfg.PodNetwork
	ncfg.NodeIP = n.cfg.AdvertiseAddr
	ncfg.ClusterCIDR = n.cfg.PodCIDR
	ncfg.ExtraAddrs = []string{dnsListenAddr.Addr().String() + "/32"}
	ncfg.ServiceCIDR = apiserver.DefaultServiceCIDR.String()
	var network *podnet.Network
	for {
		network, err = podnet.New(ncfg)
		if err == nil {
			break
		}
		n.log.Error("setting up the pod network", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
	defer network.Close()
	svcDone := make(chan struct{})
	svcCtx, stopServices := context.WithCancel(ctx)
	go func() { defer close(svcDone); n.runServices(svcCtx) }()
	defer func() { stopServices(); <-svcDone }()
	rec := events.New(events.Config{Proposer: n.proposer, Component: "kubelet", Host: n.id.NodeName, Now: n.now, Log: n.log})
	go rec.Run(ctx)
	acfg := agent.Config{
		Events:              rec,
		NodeName:            n.id.NodeName,
		HostIP:              n.cfg.AdvertiseAddr,
		Store:               n.store,
		Proposer:            n.proposer,
		Runtime:             n.runtime,
		Network:             network,
		DataDir:             n.dir.path(agentDir),
		Mirrors:             n.imageMirrors,
		PullFromRegistries:  n.cfg.PullFromRegistries,
		BackoffBase:         n.cfg.CrashLoopBackoff,
		RemoveCgroup:        containerd.RemoveCgroup,
		ServiceAccountToken: n.podToken,
		Log:                 n.log,
		Now:                 n.now,
	}
	a, err := agent.New(acfg)
	if err != nil {
		n.log.Error("starting the agent", "err", err)
		return
	}
	n.agent.Store(a)
	defer n.agent.Store(nil)
	n.log.Info("agent running", "podCIDR", cidr, "podNetwork", ncfg.Mode)
	go n.refreshNodeImages(ctx)
	if err := a.Run(ctx); err != nil {
		n.log.Error("agent stopped", "err", err)
	}
}

// waitPodCIDR waits until this node's Node object has a pod CIDR.
func (n *Node) waitPodCIDR(ctx context.Context) (string, error) {
	for {
		if o, ok := n.store.Get("nodes", "", n.id.NodeName); ok {
			if c := o.(*corev1.Node).Spec.PodCIDR; c != "" {
				return c, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// refreshNodeImages keeps Node.status.images current (peers pick image
// mirrors from it): every 10 s, writing only on change.
func (n *Node) refreshNodeImages(ctx context.Context) {
	every(ctx, 10*time.Second, func() {
		if err := n.registerNode(ctx); err != nil && ctx.Err() == nil {
			n.log.Debug("refreshing Node status", "err", err)
		}
	})
}

// every calls f every period until ctx ends (first after one period).
func every(ctx context.Context, period time.Duration, f func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f()
	}
}

// peerTLS is the client side of node-to-node mTLS.
func (n *Node) peerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      n.creds.pool,
		Certificates: []tls.Certificate{n.creds.cert},
	}
}

// peerClient is the HTTP client nodes use to talk to each other.
func (n *Node) peerClient() *http.Client {
	n.peerOnce.Do(func() {
		n.peerHTTP = &http.Client{Transport: &http.Transport{
			// A peer that is black-holed must not stall a pull for minutes.
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout: 5 * time.Second,
			TLSClientConfig:     n.peerTLS(),
			ForceAttemptHTTP2:   false,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
		}}
	})
	return n.peerHTTP
}

// imageMirrors lists the peers to pull ref from: Ready nodes that report
// the image first, then the other Ready nodes.
func (n *Node) imageMirrors(ref string) []container.Mirror {
	objs, _ := n.store.List("nodes", "")
	var have, rest []container.Mirror
	for _, o := range objs {
		node := o.(*corev1.Node)
		if node.Name == n.id.NodeName || !nodeReady(node) {
			continue
		}
		ip := ""
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		if ip == "" {
			continue
		}
		m := container.Mirror{Host: hostPort(ip, n.cfg.APIPort), Client: n.peerClient()}
		if nodeHasImage(node, ref) {
			have = append(have, m)
		} else {
			rest = append(rest, m)
		}
	}
	return append(have, rest...)
}

func nodeReady(node *corev1.Node) bool {
	return controller.NodeReadyStatus(node) == corev1.ConditionTrue
}

func nodeHasImage(node *corev1.Node, ref string) bool {
	for _, im := range node.Status.Images {
		if slices.Contains(im.Names, ref) {
			return true
		}
	}
	return false
}

// servePodStream serves pods/log, exec, attach and portforward: from the
// local agent for pods of this node, through the pod's node otherwise.
func (n *Node) servePodStream(w http.ResponseWriter, r *http.Request, pod *corev1.Pod, sub string) {
	if pod.Spec.NodeName == "" {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", pod.Name)))
		return
	}
	if pod.Spec.NodeName == n.id.NodeName {
		a := n.agent.Load()
		if a == nil {
			writeStatus(w, apierrors.NewServiceUnavailable("the agent of this node is not running"))
			return
		}
		a.ServePodStream(w, r, pod, sub)
		return
	}
	o, ok := n.store.Get("nodes", "", pod.Spec.NodeName)
	if !ok {
		writeStatus(w, apierrors.NewNotFound(corev1.Resource("nodes"), pod.Spec.NodeName))
		return
	}
	ip := ""
	for _, a := range o.(*corev1.Node).Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ip = a.Address
		}
	}
	target := &url.URL{Scheme: "https", Host: hostPort(ip, n.cfg.APIPort)}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = target.Scheme, target.Host
			pr.Out.URL.Path = internalPodsPath + pod.Namespace + "/" + pod.Name + "/" + sub
			pr.Out.URL.RawPath = ""
			pr.Out.Host = target.Host
			pr.Out.Header.Set("X-Shoal-Pod-UID", string(pod.UID))
		},
		Transport:     n.peerClient().Transport,
		FlushInterval: -1, // logs -f: every line at once
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeStatus(w, apierrors.NewServiceUnavailable(fmt.Sprintf("reaching node %s for %s of pod %s: %v", pod.Spec.NodeName, sub, pod.Name, err)))
		},
	}
	proxy.ServeHTTP(w, r)
}

// handleInternalPod serves a pod stream another node forwarded:
// /internal/v1/pods/{ns}/{name}/{sub}.
func (n *Node) handleInternalPod(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(r.URL.Path[len(internalPodsPath):], "/")
	if len(parts) != 3 {
		http.NotFound(w, r)
		return
	}
	o, ok := n.store.Get("pods", parts[0], parts[1])
	if !ok {
		writeStatus(w, apierrors.NewNotFound(corev1.Resource("pods"), parts[1]))
		return
	}
	pod := o.(*corev1.Pod)
	if uid := r.Header.Get("X-Shoal-Pod-UID"); uid != "" && uid != string(pod.UID) {
		writeStatus(w, apierrors.NewNotFound(corev1.Resource("pods"), parts[1]))
		return
	}
	if pod.Spec.NodeName != n.id.NodeName {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("pod %s runs on %s, not on %s", pod.Name, pod.Spec.NodeName, n.id.NodeName)))
		return
	}
	n.servePodStream(w, r, pod, parts[2])
}

// writeStatus answers with a Kubernetes Status.
func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	st := err.ErrStatus
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	writeJSON(w, int(st.Code), &st)
}

// registryHandler serves the node's images to its peers (read-only OCI
// distribution API), or 404 without a runtime.
func (n *Node) registryHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := n.registry; h != nil {
			h.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	})
}
