package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// defaultNATSListen is where serve's embedded NATS listens by default.
const defaultNATSListen = "127.0.0.1:4222"

// clientNATSURL is where client subcommands look for NATS when
// PUSHER_NATS_URL is unset: the embedded server's address, from
// PUSHER_NATS_LISTEN as serve reads it, so a pusher moved to another
// port with PUSHER_NATS_LISTEN is found by commands given the same
// environment. A wildcard host is reached on loopback.
func clientNATSURL(getenv func(string) string) string {
	listen := strings.TrimSpace(getenv("PUSHER_NATS_LISTEN"))
	if listen == "" {
		listen = defaultNATSListen
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "nats://" + listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "nats://" + net.JoinHostPort(host, port)
}

// natsFlags are the connection options every NATS-using command shares.
type natsFlags struct {
	url, creds, nkey, user, password, token, tlsCA, tlsCert, tlsKey *string
}

func addNATSFlags(f *flagSet, urlUsage, urlDefault string) *natsFlags {
	return &natsFlags{
		url:      f.List("nats-url", "PUSHER_NATS_URL", urlDefault, urlUsage),
		creds:    f.String("nats-creds", "PUSHER_NATS_CREDS", "", "NATS credentials file (JWT + nkey)"),
		nkey:     f.String("nats-nkey", "PUSHER_NATS_NKEY", "", "NATS nkey seed file"),
		user:     f.String("nats-user", "PUSHER_NATS_USER", "", "NATS user name"),
		password: f.Secret("nats-password", "PUSHER_NATS_PASSWORD", "NATS password"),
		token:    f.Secret("nats-token", "PUSHER_NATS_TOKEN", "NATS authentication token"),
		tlsCA:    f.String("nats-tls-ca", "PUSHER_NATS_TLS_CA", "", "CA file to verify the NATS server"),
		tlsCert:  f.String("nats-tls-cert", "PUSHER_NATS_TLS_CERT", "", "client certificate file for NATS mutual TLS"),
		tlsKey:   f.String("nats-tls-key", "PUSHER_NATS_TLS_KEY", "", "client key file for NATS mutual TLS"),
	}
}

// addClientNATSFlags adds the NATS flags of a client subcommand: the URL
// defaults to the embedded server's address (clientNATSURL).
func addClientNATSFlags(f *flagSet) *natsFlags {
	return addNATSFlags(f, "NATS server URLs (unset: nats://$PUSHER_NATS_LISTEN, the embedded server)", clientNATSURL(f.getenv))
}

// options turns the flags into nats.go options; the URL is separate.
func (n *natsFlags) options() ([]nats.Option, error) {
	var opts []nats.Option
	if *n.creds != "" {
		opts = append(opts, nats.UserCredentials(*n.creds))
	}
	if *n.nkey != "" {
		o, err := nats.NkeyOptionFromSeed(*n.nkey)
		if err != nil {
			return nil, fmt.Errorf("nkey seed %s: %w", *n.nkey, err)
		}
		opts = append(opts, o)
	}
	if *n.user != "" {
		opts = append(opts, nats.UserInfo(*n.user, *n.password))
	}
	if *n.token != "" {
		opts = append(opts, nats.Token(*n.token))
	}
	if *n.tlsCA != "" {
		opts = append(opts, nats.RootCAs(*n.tlsCA))
	}
	if (*n.tlsCert == "") != (*n.tlsKey == "") {
		return nil, usagef("--nats-tls-cert and --nats-tls-key go together")
	}
	if *n.tlsCert != "" {
		opts = append(opts, nats.ClientCert(*n.tlsCert, *n.tlsKey))
	}
	return opts, nil
}

// connectClient connects a short-lived CLI client to NATS.
func (n *natsFlags) connectClient() (*nats.Conn, error) {
	opts, err := n.options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Name("pusher-cli"), nats.Timeout(5*time.Second))
	nc, err := nats.Connect(*n.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", *n.url, err)
	}
	return nc, nil
}
