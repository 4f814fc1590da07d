// nodetools is the one static binary of the local node's images, built from this module with
// no dependencies beyond the standard library:
//
//	nodetools pause        the pod sandbox's process: sleeps, reaps orphans, exits on SIGTERM
//	nodetools serve PORT   an HTTP server answering every path with 200 and the pod's name, and
//	                       /healthz with 500 once "nodetools fail" has run in the container
//	nodetools fail         make this container's /healthz fail (a target turning unhealthy)
//	nodetools get URL      GET a URL, print the body, exit non-zero unless 2xx
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func pause() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			for {
				var status syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}

const failing = "/tmp/nodetools-failing"

func serve(port string) {
	name, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n", name)
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(failing); err == nil {
			http.Error(w, "failing", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%s\n", name)
	})
	server := &http.Server{Addr: ":" + port, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
		<-signals
		os.Exit(0)
	}()
	if err := server.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func get(url string) {
	client := &http.Client{Timeout: 10 * time.Second}
	response, err := client.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer response.Body.Close()
	body, _ := io.ReadAll(response.Body)
	fmt.Print(string(body))
	if response.StatusCode < 200 || response.StatusCode > 299 {
		fmt.Fprintln(os.Stderr, response.Status)
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nodetools pause | serve PORT | get URL")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
		pause()
	case "serve":
		serve(os.Args[2])
	case "get":
		get(os.Args[2])
	case "fail":
		if err := os.WriteFile(failing, nil, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
