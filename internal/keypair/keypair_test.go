package keypair

import (
	"os"
	"strings"
	"testing"
	"time"

	"chatcluster/internal/testenv"
)

// Reload takes a renewed certificate; files that do not load leave the
// one in use, and expired certificates are refused.
func TestLoadAndReload(t *testing.T) {
	ca := testenv.NewCA(t, "test")
	cert, key := ca.Issue(t, "a", "127.0.0.1")
	p, err := Load(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	first := p.Certificate().Leaf.SerialNumber

	cert2, key2 := ca.Issue(t, "b", "127.0.0.1")
	copyFile(t, cert2, cert)
	copyFile(t, key2, key)
	if err := p.Reload(); err != nil {
		t.Fatal(err)
	}
	if p.Certificate().Leaf.SerialNumber.Cmp(first) == 0 {
		t.Fatal("Reload kept the old certificate")
	}
	second := p.Certificate().Leaf.SerialNumber

	if err := os.WriteFile(cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(); err == nil {
		t.Fatal("Reload of a broken file succeeded")
	}
	if p.Certificate().Leaf.SerialNumber.Cmp(second) != 0 {
		t.Fatal("a failed Reload changed the certificate in use")
	}

	old, oldKey := ca.IssueSpec(t, testenv.CertSpec{Name: "old", Hosts: []string{"127.0.0.1"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if _, err := Load(old, oldKey); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Load of an expired certificate: %v", err)
	}
	if _, err := Load(cert2, oldKey); err == nil {
		t.Fatal("Load of a certificate with another's key succeeded")
	}
	if _, err := LoadCAs(key2); err == nil {
		t.Fatal("LoadCAs of a key file succeeded")
	}
	if pool, err := LoadCAs(ca.File); err != nil || pool == nil {
		t.Fatalf("LoadCAs: %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
