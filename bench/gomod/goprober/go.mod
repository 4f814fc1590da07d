// A minimal Go prober for the probe-scale benchmark: net/http from the standard library only,
// the same targets and rate as svcreg, no scheduler state or status logic. It shows where a
// Python prober stands beside a compiled one (blackbox_exporter and Consul are not served by
// the module proxy here).
module svcreg.io/bench/goprober

go 1.26
