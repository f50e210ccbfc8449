package consulkv

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/hashicorp/consul/api"
)

// access is what the store was told about reaching Consul, kept to explain
// errors whose cause is a setting: which TLS files, whether there is a
// token (never the token itself: errors end up in logs and Docker's CLI).
type access struct {
	caFile, caPath        string
	clientCert, clientKey string
	token                 bool   // a token is set (CONSUL_HTTP_TOKEN or the file's)
	tokenFile             string // CONSUL_HTTP_TOKEN_FILE
	tokenFromFile         bool   // the token is the file's
}

// tokenSource names where the token came from.
func (a access) tokenSource() string {
	if a.tokenFromFile {
		return "the file CONSUL_HTTP_TOKEN_FILE=" + a.tokenFile
	}
	return "CONSUL_HTTP_TOKEN"
}

// accessOf reads cfg after api.NewClient, which has put the token file's
// token into cfg.Token, unless the file is empty: then CONSUL_HTTP_TOKEN's
// stays, and errors must name that variable, not the file.
func accessOf(cfg *api.Config) access {
	a := access{
		caFile: cfg.TLSConfig.CAFile, caPath: cfg.TLSConfig.CAPath,
		clientCert: cfg.TLSConfig.CertFile, clientKey: cfg.TLSConfig.KeyFile,
		token: cfg.Token != "", tokenFile: cfg.TokenFile,
	}
	if a.token && a.tokenFile != "" {
		data, err := os.ReadFile(a.tokenFile)
		a.tokenFromFile = err == nil && strings.TrimSpace(string(data)) == cfg.Token
	}
	return a
}

// checkFiles loads the CA, client certificate and token files as the
// client will, so that a missing or unreadable file is reported at
// start-up, naming the variable that points at it, instead of as a bare
// "open ...: no such file".
func checkFiles(cfg *api.Config) error {
	if cfg.TokenFile != "" {
		if _, err := os.ReadFile(cfg.TokenFile); err != nil {
			return fmt.Errorf("ACL token file CONSUL_HTTP_TOKEN_FILE=%s: %w", cfg.TokenFile, err)
		}
	}
	if cfg.HttpClient != nil || (cfg.Transport != nil && cfg.Transport.TLSClientConfig != nil) {
		return nil // the caller set up TLS itself
	}
	c := cfg.TLSConfig
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together (a client certificate and its key)")
	}
	if c.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
			return fmt.Errorf("client certificate CONSUL_CLIENT_CERT=%s, CONSUL_CLIENT_KEY=%s: %w", c.CertFile, c.KeyFile, err)
		}
	}
	if c.CAFile != "" {
		if _, err := api.SetupTLSConfig(&api.TLSConfig{CAFile: c.CAFile}); err != nil {
			return fmt.Errorf("CA certificate CONSUL_CACERT=%s: %w", c.CAFile, err)
		}
	}
	if c.CAPath != "" {
		if _, err := api.SetupTLSConfig(&api.TLSConfig{CAPath: c.CAPath}); err != nil {
			return fmt.Errorf("CA certificates CONSUL_CAPATH=%s: %w", c.CAPath, err)
		}
	}
	return nil
}

// explain prefixes err with what is wrong in felt's Consul settings and
// which variable to fix, when its cause is one: a CA that does not sign
// Consul's certificate, a client certificate Consul refuses, TLS on one
// side only, a missing or powerless ACL token. Other errors pass unchanged;
// err stays in the chain either way.
func (a access) explain(err error) error {
	if hint := a.hint(err); hint != "" {
		return fmt.Errorf("%s: %w", hint, err)
	}
	return err
}

func (a access) hint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var badName x509.HostnameError
	var invalid x509.CertificateInvalidError
	var status api.StatusError
	var record tls.RecordHeaderError
	switch {
	case errors.As(err, &unknownCA):
		switch {
		case a.caFile != "":
			return fmt.Sprintf("TLS: Consul's certificate is not signed by the CA in CONSUL_CACERT=%s (wrong CA file?)", a.caFile)
		case a.caPath != "":
			return fmt.Sprintf("TLS: Consul's certificate is not signed by any CA in CONSUL_CAPATH=%s", a.caPath)
		}
		return "TLS: Consul's certificate is signed by a CA this host does not trust: set CONSUL_CACERT to the CA certificate that signed it"
	case errors.As(err, &badName):
		return fmt.Sprintf("TLS: Consul's certificate is not valid for %s: use a name or address it holds in CONSUL_HTTP_ADDR, or set CONSUL_TLS_SERVER_NAME", badName.Host)
	case errors.As(err, &invalid):
		return "TLS: Consul's certificate is not valid (expired, or not for a server)"
	case remoteTLSAlert(err):
		// The server ended the handshake: with verify_incoming that is its
		// verdict on our client certificate (or the lack of one).
		if a.clientCert == "" {
			return "TLS: Consul refused the connection, it requires a client certificate: set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY"
		}
		return fmt.Sprintf("TLS: Consul refused the client certificate in CONSUL_CLIENT_CERT=%s (it must be signed by a CA Consul trusts, for client authentication)", a.clientCert)
	case errors.As(err, &record) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return "TLS: Consul does not serve HTTPS at this address: use an http:// CONSUL_HTTP_ADDR and unset CONSUL_HTTP_SSL, or enable TLS in Consul"
	case strings.Contains(err.Error(), "HTTP request to an HTTPS server"): // a 400, or a transaction's "Failed request"
		return "TLS: Consul serves HTTPS only: set CONSUL_HTTP_SSL=true or use an https:// CONSUL_HTTP_ADDR"
	case errors.As(err, &status) && status.Code == http.StatusForbidden:
		return a.aclHint(status.Body)
	case aclDenied(err.Error()):
		return a.aclHint(err.Error()) // a transaction's per-operation errors
	}
	return ""
}

// aclHint explains Consul's 403 answers: "ACL not found" (an unknown
// token) or "Permission denied" (the token's policies do not allow it).
func (a access) aclHint(msg string) string {
	switch {
	case strings.Contains(msg, "ACL not found"):
		return fmt.Sprintf("ACL: Consul does not know the token in %s (deleted, expired, or from another cluster)", a.tokenSource())
	case !a.token && a.tokenFile != "":
		return fmt.Sprintf("ACL: no token (the file CONSUL_HTTP_TOKEN_FILE=%s is empty) and Consul's anonymous token may not do this", a.tokenFile)
	case !a.token:
		return "ACL: no token (CONSUL_HTTP_TOKEN is empty) and Consul's anonymous token may not do this: set CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE to a token that may write felt's key prefix"
	}
	return fmt.Sprintf("ACL: the token in %s lacks permission for this: its policy must allow writing felt's key prefix (key_prefix \"felt/\" { policy = \"write\" })", a.tokenSource())
}

func aclDenied(msg string) bool {
	return strings.Contains(msg, "Permission denied") || strings.Contains(msg, "ACL not found")
}

// remoteTLSAlert reports whether the peer aborted the TLS session with an
// alert ("remote error: tls: certificate required", "... bad certificate",
// "... unknown certificate authority"). crypto/tls reports these as a
// net.OpError with Op "remote error" around an unexported alert type; the
// HTTP transport does not always keep that chain, hence the text fallback.
func remoteTLSAlert(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return true
	}
	return strings.Contains(err.Error(), "remote error: tls: ")
}
