// Command felt is the felt Docker network plugin. With no arguments it serves
// the network and IPAM drivers on FELT_SOCKET until SIGTERM or SIGINT;
// `felt leases` lists the shared store's network records and leases
// (leases.go); `felt status` asks the running felt what it is doing
// (status.go); `felt --version` prints its version.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/felt-net/felt/plugin"
)

// version is felt's version, set when building:
//
//	go build -ldflags "-X main.version=$(scripts/version.sh)" ./cmd/felt
//
// (make, scripts/plugin-rootfs.sh and the Dockerfile do). "dev" otherwise.
var version = "dev"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "serve":
		case "leases":
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			code := runLeases(ctx, os.Args[2:], os.Stdout, os.Stderr, os.LookupEnv)
			stop()
			os.Exit(code)
		case "status":
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			code := runStatus(ctx, os.Args[2:], os.Stdout, os.Stderr, os.LookupEnv)
			stop()
			os.Exit(code)
		case "--version", "-version", "version":
			fmt.Println("felt", version)
			return
		default:
			fmt.Fprintf(os.Stderr, "usage: felt [serve | status [--json] [--socket PATH] | leases [--json] | --version]\n\nfelt serves Docker's network and IPAM plugin calls on FELT_SOCKET;\nfelt status asks the running felt what it is doing (peers, store, drift, problems);\nfelt leases lists the cluster's network records and leases from the store.\nSettings come from the environment: %v\n", plugin.SettingNames())
			os.Exit(2)
		}
	}
	s, err := plugin.FromOS()
	if err != nil {
		fmt.Fprintf(os.Stderr, "felt %s: %v\n", version, err)
		os.Exit(2)
	}
	s.Version = version
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: s.LogLevel}))
	// First line of every start: which felt this is, for bug reports and
	// to see an upgrade happen in the daemon's log.
	log.Info("felt starting", "version", version)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := plugin.Run(ctx, s, log); err != nil {
		log.Error("felt stopped", "err", err)
		os.Exit(1)
	}
}
