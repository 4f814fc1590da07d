// Command goprober probes N registrations spread over local HTTP targets, each every interval
// on a fresh connection (as svcreg and the kubelet do), for a number of seconds, then prints one
// JSON line: probes made, how many passed, and the CPU seconds the process used.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	targets := flag.String("targets", "", "comma-separated host:port list")
	count := flag.Int("count", 10000, "registrations")
	interval := flag.Duration("interval", 10*time.Second, "probe interval of each registration")
	timeout := flag.Duration("timeout", 2*time.Second, "probe timeout")
	seconds := flag.Duration("seconds", 30*time.Second, "how long to probe")
	path := flag.String("path", "/healthz", "probe path")
	flag.Parse()
	hosts := strings.Split(*targets, ",")
	if *targets == "" || len(hosts) == 0 {
		fmt.Fprintln(os.Stderr, "goprober: -targets is required")
		os.Exit(2)
	}
	client := &http.Client{
		Timeout:   *timeout,
		Transport: &http.Transport{DisableKeepAlives: true, MaxIdleConns: 0},
	}
	var probes, passed atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), *seconds)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < *count; i++ {
		url := "http://" + hosts[i%len(hosts)] + *path
		offset := time.Duration(int64(*interval) * int64(i) / int64(*count))
		wg.Add(1)
		go func() {
			defer wg.Done()
			timer := time.NewTimer(offset)
			defer timer.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
				timer.Reset(*interval)
				answer, err := client.Get(url)
				probes.Add(1)
				if err == nil {
					_, _ = io.Copy(io.Discard, answer.Body)
					answer.Body.Close()
					if answer.StatusCode >= 200 && answer.StatusCode < 400 {
						passed.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	var usage syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	cpu := float64(usage.Utime.Sec+usage.Stime.Sec) + float64(usage.Utime.Usec+usage.Stime.Usec)/1e6
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{
		"probes": probes.Load(), "passed": passed.Load(), "cpuSeconds": cpu,
		"maxRssKiB": usage.Maxrss, "seconds": seconds.Seconds(),
	})
}
