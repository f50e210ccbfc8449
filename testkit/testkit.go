// Package testkit is what felt's tests share, and only tests import: the
// one answer to "this test cannot run here" (Unavailable: skip, or fail
// under CI=true), the one command runner (Run, MustRun), the one ping
// (Ping, from inside a network namespace, without a ping binary), polling
// (WaitFor) and small helpers (Must, SetEnv, LogBuffer, ModuleRoot).
//
// Its subpackages build on it:
//   - testkit/netns: throwaway network namespaces with netlink handles,
//     links and addresses, for tests that need a real kernel;
//   - testkit/consul: a throwaway Consul agent (bin/consul), optionally
//     with TLS and ACLs, optionally inside a namespace;
//   - testkit/hosts: felt daemons in namespace "hosts", driven over their
//     sockets with the JSON Docker sends, and clusters of them on one
//     underlay.
//
// Production code never imports testkit; testkit imports production code
// only where a test harness must (internal/nsutil to enter a namespace).
package testkit
