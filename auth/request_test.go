package auth

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

// tokenRequestTests is shared by TestTokenFromRequest and the fuzz seeds.
var tokenRequestTests = []struct {
	name    string
	headers []string // Authorization values; nil means no header
	query   string   // raw query string
	max     int
	want    string
	wantErr error
}{
	{name: "header", headers: []string{"Bearer abc.def.ghi"}, want: "abc.def.ghi"},
	{name: "lower-case scheme", headers: []string{"bearer abc"}, want: "abc"},
	{name: "upper-case scheme", headers: []string{"BEARER abc"}, want: "abc"},
	{name: "extra spaces", headers: []string{"  Bearer   abc  "}, want: "abc"},
	{name: "query", query: "token=abc.def.ghi", want: "abc.def.ghi"},
	{name: "query escaped", query: "other=1&token=a%2Bb", want: "a+b"},
	{name: "header wins over query", headers: []string{"Bearer fromheader"}, query: "token=fromquery", want: "fromheader"},
	{name: "bad header ignores query", headers: []string{"Basic dXNlcjpwYXNz"}, query: "token=fromquery", wantErr: ErrMalformedHeader},
	{name: "basic scheme", headers: []string{"Basic dXNlcjpwYXNz"}, wantErr: ErrMalformedHeader},
	{name: "scheme only", headers: []string{"Bearer"}, wantErr: ErrMalformedHeader},
	{name: "scheme and spaces", headers: []string{"Bearer   "}, wantErr: ErrMalformedHeader},
	{name: "empty header", headers: []string{""}, wantErr: ErrMalformedHeader},
	{name: "bare token", headers: []string{"abc.def.ghi"}, wantErr: ErrMalformedHeader},
	{name: "space in token", headers: []string{"Bearer abc def"}, wantErr: ErrMalformedHeader},
	{name: "two headers", headers: []string{"Bearer abc", "Bearer def"}, wantErr: ErrMalformedHeader},
	{name: "header too large", headers: []string{"Bearer " + strings.Repeat("a", 9)}, max: 8, wantErr: ErrTokenTooLarge},
	{name: "header at max", headers: []string{"Bearer " + strings.Repeat("a", 8)}, max: 8, want: strings.Repeat("a", 8)},
	{name: "query too large", query: "token=" + strings.Repeat("a", 9), max: 8, wantErr: ErrTokenTooLarge},
	{name: "default max", headers: []string{"Bearer " + strings.Repeat("a", DefaultMaxTokenBytes+1)}, wantErr: ErrTokenTooLarge},
	{name: "none", wantErr: ErrNoToken},
	{name: "empty query token", query: "token=", wantErr: ErrNoToken},
	{name: "other query only", query: "uid=1", wantErr: ErrNoToken},
}

func TestTokenFromRequest(t *testing.T) {
	for _, tt := range tokenRequestTests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/ws?"+tt.query, nil)
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			got, err := TokenFromRequest(r, tt.max)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("TokenFromRequest() error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("TokenFromRequest() = %q, want %q", got, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "dXNlcjpwYXNz") {
				t.Errorf("error %q contains the credential", err)
			}
		})
	}
}
