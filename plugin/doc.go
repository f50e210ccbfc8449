// Package plugin wires felt together, one concern a file:
//
//   - settings.go: Settings, read from the environment (and only here:
//     every other package gets its configuration passed in).
//   - socket.go: Listen, the plugin's unix socket.
//   - server.go: Server, the HTTP handler of that socket, which decodes
//     Docker's calls and dispatches them to the network and IPAM drivers.
//   - run.go: Run, start-up and shutdown: the socket first (Docker waits
//     only a few seconds for a plugin), then Build, then Background.
//   - app.go: App and Build, the composition root (stores, drivers,
//     overlay, firewall), and the App's Background loops and Close.
//   - renew.go: the lease renewal policy (renewLoop).
//   - underlay.go, hostnets.go: this host's underlay interface and address,
//     and the networks of its addresses that pools must not overlap.
package plugin
