package webhook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"chatcluster/internal/flagenv"
)

// Flags defines the webhook flags of a node on fs and returns the function
// that, after fs.Parse, builds and validates the Config they give (reading
// every secret file).
func Flags(fs *flagenv.Set) func() (Config, error) {
	urls := fs.Strings("webhook", "CHAT_WEBHOOKS", "URL of a webhook endpoint that gets the events of --webhook-events, signed with --webhook-secret-file")
	events := fs.String("webhook-events", "CHAT_WEBHOOK_EVENTS", "", "events the --webhook endpoints get, comma-separated (empty: all of "+strings.Join(Types, ", ")+")")
	secretFile := fs.String("webhook-secret-file", "CHAT_WEBHOOK_SECRET_FILE", "", "file holding the secret the --webhook endpoints' deliveries are signed with (at least 16 bytes)")
	file := fs.String("webhooks-file", "CHAT_WEBHOOKS_FILE", "", "YAML (or JSON) file of webhook endpoints, each with its name, url, events and secret_file, and of the before_message hook; see docs/protocol.md, Webhooks")
	attempts := fs.Int("webhook-attempts", "CHAT_WEBHOOK_ATTEMPTS", DefaultAttempts, "attempts to deliver one event to one endpoint before it goes to the dead letters")
	retryMin := fs.Duration("webhook-retry-min", "CHAT_WEBHOOK_RETRY_MIN", DefaultRetryMin, "wait after a failed delivery; doubled after each further failure")
	retryMax := fs.Duration("webhook-retry-max", "CHAT_WEBHOOK_RETRY_MAX", DefaultRetryMax, "longest wait between two attempts of one event")
	timeout := fs.Duration("webhook-timeout", "CHAT_WEBHOOK_TIMEOUT", DefaultTimeout, "how long one delivery may take (an endpoint in --webhooks-file may set its own)")
	conc := fs.Int("webhook-concurrency", "CHAT_WEBHOOK_CONCURRENCY", DefaultConcurrency, "deliveries in flight per endpoint")
	queueCap := fs.Int("webhook-queue-cap", "CHAT_WEBHOOK_QUEUE_CAP", DefaultQueueCap, "events the queue holds, all endpoints together; past it the oldest go, delivered or not")
	hookURL := fs.String("before-message-hook", "CHAT_BEFORE_MESSAGE_HOOK", "", "URL asked before each message is stored: it allows, rejects or rewrites it (empty: none)")
	hookSecret := fs.String("before-message-hook-secret-file", "CHAT_BEFORE_MESSAGE_HOOK_SECRET_FILE", "", "file holding the secret the before-message hook's calls are signed with")
	hookTimeout := fs.Duration("before-message-hook-timeout", "CHAT_BEFORE_MESSAGE_HOOK_TIMEOUT", DefaultHookTimeout, "how long a message waits for the before-message hook")
	hookFail := fs.String("before-message-hook-fail", "CHAT_BEFORE_MESSAGE_HOOK_FAIL", "open", "when the before-message hook fails or is late: open stores the message as sent, closed refuses it (503)")
	return func() (Config, error) {
		c := Config{
			Attempts: *attempts, RetryMin: *retryMin, RetryMax: *retryMax, Timeout: *timeout,
			Concurrency: *conc, QueueCap: int64(*queueCap),
		}
		if len(*urls) > 0 {
			if *secretFile == "" {
				return c, errors.New("--webhook needs --webhook-secret-file: every delivery is signed")
			}
			secret, err := readSecret(*secretFile)
			if err != nil {
				return c, fmt.Errorf("--webhook-secret-file: %w", err)
			}
			evs := flagenv.List(*events)
			for _, u := range *urls {
				c.Endpoints = append(c.Endpoints, Endpoint{URL: u, Events: evs, Secret: secret})
			}
		}
		if *hookURL != "" {
			c.BeforeMessage = HookConfig{URL: *hookURL, Timeout: *hookTimeout}
			switch *hookFail {
			case "open":
			case "closed":
				c.BeforeMessage.FailClosed = true
			default:
				return c, fmt.Errorf("--before-message-hook-fail %q: want open or closed", *hookFail)
			}
			if *hookSecret == "" {
				return c, errors.New("--before-message-hook needs --before-message-hook-secret-file: every call is signed")
			}
			secret, err := readSecret(*hookSecret)
			if err != nil {
				return c, fmt.Errorf("--before-message-hook-secret-file: %w", err)
			}
			c.BeforeMessage.Secret = secret
		}
		if *file != "" {
			f, err := LoadFile(*file)
			if err != nil {
				return c, err
			}
			c.Endpoints = append(c.Endpoints, f.Endpoints...)
			if f.BeforeMessage.URL != "" {
				if c.BeforeMessage.URL != "" {
					return c, errors.New("the before-message hook is given twice: by --before-message-hook and in --webhooks-file")
				}
				c.BeforeMessage = f.BeforeMessage
			}
		}
		return c, c.Validate()
	}
}

// File is what a webhooks file configures.
type File struct {
	Endpoints     []Endpoint
	BeforeMessage HookConfig
}

// fileYAML is the layout of a webhooks file.
type fileYAML struct {
	Endpoints []struct {
		Name       string   `yaml:"name"`
		URL        string   `yaml:"url"`
		Events     []string `yaml:"events"`
		SecretFile string   `yaml:"secret_file"`
		Timeout    string   `yaml:"timeout"`
	} `yaml:"endpoints"`
	BeforeMessage *struct {
		URL        string `yaml:"url"`
		SecretFile string `yaml:"secret_file"`
		Timeout    string `yaml:"timeout"`
		OnFailure  string `yaml:"on_failure"`
	} `yaml:"before_message"`
}

// LoadFile reads a webhooks file and the secret files it names (relative
// paths are taken from the file's folder). Unknown keys are errors, so a
// typo does not silently drop a setting. Validate checks the rest.
func LoadFile(path string) (File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return File{}, fmt.Errorf("--webhooks-file: %w", err)
	}
	var y fileYAML
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&y); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty file
		return File{}, fmt.Errorf("--webhooks-file %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	secret := func(what, p string) ([]byte, error) {
		if p == "" {
			return nil, fmt.Errorf("--webhooks-file %s: %s has no secret_file", path, what)
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		s, err := readSecret(p)
		if err != nil {
			return nil, fmt.Errorf("--webhooks-file %s: %s: %w", path, what, err)
		}
		return s, nil
	}
	dur := func(what, v string) (time.Duration, error) {
		if v == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("--webhooks-file %s: %s: timeout %q is not a positive duration (e.g. 5s)", path, what, v)
		}
		return d, nil
	}
	var f File
	for i, e := range y.Endpoints {
		what := fmt.Sprintf("endpoint %d (%s)", i+1, e.Name)
		ep := Endpoint{Name: e.Name, URL: e.URL, Events: e.Events}
		if ep.Secret, err = secret(what, e.SecretFile); err != nil {
			return File{}, err
		}
		if ep.Timeout, err = dur(what, e.Timeout); err != nil {
			return File{}, err
		}
		f.Endpoints = append(f.Endpoints, ep)
	}
	if h := y.BeforeMessage; h != nil && h.URL != "" {
		f.BeforeMessage.URL = h.URL
		if f.BeforeMessage.Secret, err = secret("before_message", h.SecretFile); err != nil {
			return File{}, err
		}
		if f.BeforeMessage.Timeout, err = dur("before_message", h.Timeout); err != nil {
			return File{}, err
		}
		switch h.OnFailure {
		case "", "open":
		case "closed":
			f.BeforeMessage.FailClosed = true
		default:
			return File{}, fmt.Errorf("--webhooks-file %s: before_message: on_failure %q: want open or closed", path, h.OnFailure)
		}
	}
	return f, nil
}

// readSecret reads a secret from a file, without surrounding white space.
// Its errors never hold the secret.
func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return bytes.TrimSpace(b), nil
}
