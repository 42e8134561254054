// Command echo is Shoal's test server: a static HTTP server (standard library
// only) that says which pod answered, for tests of pod networking and
// services. e2e/images packs it into an image.
//
// It listens on $PORT (default 8080) and answers:
//
//	GET /healthz  "ok"
//	GET /json     {"pod":…,"ip":…,"client":…,"headers":{…}}
//	GET /kube     the status code (or the error) of an in-cluster API call
//	              made as client-go's in-cluster config makes it: the pod's
//	              service-account token and CA from
//	              /var/run/secrets/kubernetes.io/serviceaccount, to
//	              $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT (?host=
//	              overrides the host), GET ?path= (default: the pods of the
//	              pod's namespace)
//	anything else one line "<pod-name> <pod-ip> <method> <path>"
//
// Every answer carries the client's address in the X-Client-Addr header.
// The pod name is $POD_NAME, else the hostname; the IP is $POD_IP, else the
// first address of a non-loopback interface (IPv4 first, "-" if none). SIGTERM or SIGINT
// shut it down gracefully (in-flight requests finish) and it exits 0.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("echo: ")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler(), ReadHeaderTimeout: 10 * time.Second}
	log.Printf("%s %s listening on %s", podName(), podIP(), ln.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	log.Print("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"pod": podName(), "ip": podIP(), "client": r.RemoteAddr, "headers": r.Header,
		})
	})
	mux.HandleFunc("/kube", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		code, err := inClusterGet(r.Context(), r.URL.Query().Get("host"), r.URL.Query().Get("path"))
		if err != nil {
			fmt.Fprintf(w, "error: %v\n", err)
			return
		}
		fmt.Fprintln(w, code)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s %s %s %s\n", podName(), podIP(), r.Method, r.URL.Path)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Client-Addr", r.RemoteAddr)
		mux.ServeHTTP(w, r)
	})
}

func podName() string {
	if name := os.Getenv("POD_NAME"); name != "" {
		return name
	}
	name, _ := os.Hostname()
	return name
}

// podIP is $POD_IP, else the first global address of an up, non-loopback
// interface, IPv4 before IPv6; it is looked up per request since a pod's
// address may come after the process.
func podIP() string {
	if ip := os.Getenv("POD_IP"); ip != "" {
		return ip
	}
	ifaces, _ := net.Interfaces()
	var v6 string
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			switch {
			case !ok || !ipn.IP.IsGlobalUnicast():
			case ipn.IP.To4() != nil:
				return ipn.IP.String()
			case v6 == "":
				v6 = ipn.IP.String()
			}
		}
	}
	if v6 == "" {
		return "-" // no address: keep the line's four fields
	}
	return v6
}

// saDir is where a pod's service-account credentials are mounted.
const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// inClusterGet calls the API as a workload does and returns the status.
func inClusterGet(ctx context.Context, host, path string) (int, error) {
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return 0, err
	}
	ca, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return 0, err
	}
	ns, err := os.ReadFile(saDir + "/namespace")
	if err != nil {
		return 0, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return 0, errors.New("ca.crt holds no certificate")
	}
	if host == "" {
		host = os.Getenv("KUBERNETES_SERVICE_HOST")
	}
	port := os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return 0, errors.New("KUBERNETES_SERVICE_HOST or _PORT not set")
	}
	if path == "" {
		path = "/api/v1/namespaces/" + string(ns) + "/pods"
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort(host, port)+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
