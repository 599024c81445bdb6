package store

import (
	"net/url"
	"strings"
)

// WithDatabase returns the connection string s with its database replaced
// by name, for tools that create a database on a server and then use it.
// In a keyword/value string a repeated keyword's last value wins.
func WithDatabase(s, name string) string {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return s // the caller's connect reports the malformed URL
		}
		u.Path = "/" + name
		return u.String()
	}
	return s + " dbname=" + name
}
