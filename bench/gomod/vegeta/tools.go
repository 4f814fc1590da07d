//go:build tools

// Package tools pins the load generator as a dependency of this module.
package tools

import _ "github.com/tsenart/vegeta/v12"
