package wire

import (
	"strings"
	"testing"
	"time"
)

func TestParseTTL(t *testing.T) {
	for _, tt := range []struct {
		give    string
		want    time.Duration
		wantErr bool
	}{
		{give: "90s", want: 90 * time.Second},
		{give: "1h30m", want: 90 * time.Minute},
		{give: " 250ms ", want: 250 * time.Millisecond},
		{give: "90", want: 90 * time.Second},
		{give: "3153600000", want: 3153600000 * time.Second},
		{give: "3153600001", wantErr: true}, // over a century
		{give: "0", wantErr: true},
		{give: "0s", wantErr: true},
		{give: "-5s", wantErr: true},
		{give: "-5", wantErr: true},
		{give: "1.5", wantErr: true},
		{give: "5 minutes", wantErr: true},
		{give: "9223372036854775807", wantErr: true},
		{give: "", wantErr: true},
	} {
		got, err := ParseTTL(tt.give)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseTTL(%q) = %s, %v; want %s, error %v", tt.give, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), HeaderTTL) {
			t.Errorf("ParseTTL(%q) error %q does not name the header", tt.give, err)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for _, tt := range []struct {
		name    string
		give    map[string]string
		want    Policy
		wantErr bool
	}{
		{name: "none", give: nil},
		{name: "both", give: map[string]string{HeaderTTL: "30s", HeaderOffline: "drop"}, want: Policy{TTL: 30 * time.Second, DropOffline: true}},
		{name: "store in capitals", give: map[string]string{HeaderOffline: "STORE"}},
		{name: "typo in offline stores", give: map[string]string{HeaderOffline: "dorp", HeaderTTL: "1m"}, want: Policy{TTL: time.Minute}, wantErr: true},
		{name: "typo in ttl keeps forever", give: map[string]string{HeaderTTL: "1 minute", HeaderOffline: "drop"}, want: Policy{DropOffline: true}, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePolicy(func(k string) string { return tt.give[k] })
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("ParsePolicy(%v) = %+v, %v; want %+v, error %v", tt.give, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestPolicyExpired(t *testing.T) {
	pub := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	p := Policy{TTL: time.Minute}
	if p.Expired(pub, pub.Add(time.Minute)) || !p.Expired(pub, pub.Add(time.Minute+time.Millisecond)) {
		t.Fatal("a 1m TTL expires only after a minute")
	}
	if (Policy{}).Expired(pub, pub.Add(1000*time.Hour)) {
		t.Fatal("no TTL never expires")
	}
}

// FuzzParsePolicy: header values come from any publisher; whatever they
// hold, parsing never panics, a value accepted is within bounds, and a
// rejected one leaves the default (keep, store).
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{"30s", "90", "drop", "store", "-1", "1e9", "9223372036854775807s", "1h1h", "\x00"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, ttl, offline string) {
		p, _ := ParsePolicy(func(k string) string {
			if k == HeaderTTL {
				return ttl
			}
			return offline
		})
		if p.TTL < 0 || p.TTL > maxTTL {
			t.Fatalf("TTL %q parsed to %s", ttl, p.TTL)
		}
		if _, terr := ParseTTL(ttl); ttl != "" && terr != nil && p.TTL != 0 {
			t.Fatalf("malformed TTL %q gave %s", ttl, p.TTL)
		}
		if _, oerr := ParseOffline(offline); oerr != nil && p.DropOffline {
			t.Fatalf("malformed offline %q drops", offline)
		}
	})
}
