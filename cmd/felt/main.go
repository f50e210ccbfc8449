// Command felt is the felt Docker network plugin. With no arguments it serves
// the network and IPAM drivers on FELT_SOCKET until SIGTERM or SIGINT.
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

func main() {
	if len(os.Args) > 1 && os.Args[1] != "serve" {
		fmt.Fprintf(os.Stderr, "usage: felt [serve]\n\nfelt serves Docker's network and IPAM plugin calls on FELT_SOCKET.\nSettings come from the environment: %v\n", plugin.SettingNames)
		os.Exit(2)
	}
	s, err := plugin.FromOS()
	if err != nil {
		fmt.Fprintln(os.Stderr, "felt:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: s.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := plugin.Run(ctx, s, log); err != nil {
		log.Error("felt stopped", "err", err)
		os.Exit(1)
	}
}
