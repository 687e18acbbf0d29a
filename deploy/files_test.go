package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"chatcluster/internal/testenv"
)

// Checks of the deployment files (systemd/, compose/, k8s/, Dockerfile):
// they are not run here (no systemd as init, no container engine, no
// Kubernetes), so these tests read them and hold them to what the binaries
// and the platforms need.

// settings are the flags and environment variables a binary accepts, read
// from its --help.
type settings struct{ flags, env map[string]bool }

var (
	helpFlag = regexp.MustCompile(`(?m)^\s+-([a-z0-9-]+)`)
	helpEnv  = regexp.MustCompile(`\(\$(CHAT_[A-Z0-9_]+)\)`)
	chatEnv  = regexp.MustCompile(`\bCHAT_[A-Z0-9_]+\b`)
)

func settingsOf(t *testing.T, bin string) settings {
	t.Helper()
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	s := settings{flags: map[string]bool{}, env: map[string]bool{}}
	for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
		s.flags[m[1]] = true
	}
	for _, m := range helpEnv.FindAllStringSubmatch(string(out), -1) {
		s.env[m[1]] = true
	}
	if len(s.flags) < 10 || len(s.env) < 10 {
		t.Fatalf("%s --help lists %d flags, %d variables:\n%s", bin, len(s.flags), len(s.env), out)
	}
	return s
}

// binaries returns the settings of chat-node and chat-gateway, by the
// names the files install them under.
func binaries(t *testing.T) map[string]settings {
	bins := testenv.Build(t)
	return map[string]settings{"chat-node": settingsOf(t, bins.Node), "chat-gateway": settingsOf(t, bins.Gateway)}
}

// checkEnv fails for every CHAT_ variable set in vars (or named in text)
// that bin does not read.
func checkEnv(t *testing.T, where, bin string, s settings, names []string) {
	t.Helper()
	for _, n := range names {
		if !s.env[n] {
			t.Errorf("%s: %s does not read %s", where, bin, n)
		}
	}
}

// unit is a systemd unit file: section -> key -> values, commented lines
// left out.
type unit map[string]map[string][]string

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u, sec := unit{}, ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			sec = line[1 : len(line)-1]
			u[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", path, n, line)
			}
			u[sec][k] = append(u[sec][k], v)
		}
	}
	return u
}

func TestSystemdUnits(t *testing.T) {
	bins := binaries(t)
	for file, bin := range map[string]string{"chat-node@.service": "chat-node", "chat-gateway.service": "chat-gateway"} {
		path := filepath.Join("systemd", file)
		u := readUnit(t, path)
		svc := u["Service"]
		if svc == nil || u["Unit"] == nil || u["Install"] == nil {
			t.Fatalf("%s: sections %v", path, u)
		}
		need := map[string]string{
			"Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
			"ProtectHome": "yes", "PrivateTmp": "yes", "User": "chat",
			"ExecStart": "/usr/local/bin/" + bin,
		}
		for k, want := range need {
			if got := svc[k]; len(got) != 1 || got[0] != want {
				t.Errorf("%s: %s=%v, want %s", path, k, got, want)
			}
		}
		for _, k := range []string{"LimitNOFILE", "MemoryMax", "TasksMax", "RestartSec", "EnvironmentFile"} {
			if len(svc[k]) == 0 {
				t.Errorf("%s: no %s=", path, k)
			}
		}
		var names []string
		for _, e := range svc["Environment"] {
			k, v, _ := strings.Cut(e, "=")
			names = append(names, k)
			// A file setting points at a credential systemd loaded.
			if strings.HasSuffix(k, "_FILE") && !strings.HasPrefix(v, "%d/") {
				t.Errorf("%s: %s=%s is not a credential (%%d/...)", path, k, v)
			}
		}
		checkEnv(t, path, bin, bins[bin], names)
		example := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(file, "chat-"), ".service"), "@") + ".env.example"
		b, err := os.ReadFile(filepath.Join("systemd", example))
		if err != nil {
			t.Fatal(err)
		}
		var set []string
		for _, line := range strings.Split(string(b), "\n") {
			if k, _, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
				set = append(set, k)
				if strings.Contains(k, "SECRET") || strings.Contains(k, "PASSWORD") || k == "CHAT_NODE_ID" {
					t.Errorf("%s sets %s: secrets come from credentials, the id from the instance", example, k)
				}
			}
		}
		checkEnv(t, example, bin, bins[bin], set)
		checkEnv(t, example+" (comments)", bin, bins[bin], chatEnv.FindAllString(string(b), -1))
	}
	node := readUnit(t, filepath.Join("systemd", "chat-node@.service"))["Service"]
	if !slices.Contains(node["Environment"], "CHAT_NODE_ID=%i") {
		t.Error("the node's id is not its instance name")
	}
	if !slices.ContainsFunc(node["LoadCredential"], func(v string) bool { return strings.HasPrefix(v, "cluster.secret:") }) {
		t.Error("the node unit does not load the cluster secret as a credential")
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"./cmd/node", "./cmd/gateway", "/out/chat-node", "/out/chat-gateway", "/usr/local/bin/", "USER 10001"} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`FROM golang:(\d+\.\d+)`).FindStringSubmatch(s); m == nil {
		t.Error("Dockerfile builds with no golang image")
	} else if gomod, _ := os.ReadFile("../go.mod"); !bytes.Contains(gomod, []byte("go "+m[1])) {
		t.Errorf("Dockerfile builds with Go %s, go.mod asks for another", m[1])
	}
}

// docs decodes every document of a YAML file.
func docs(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	dec := yaml.NewDecoder(f)
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			out = append(out, d)
		}
	}
}

// at walks m by keys; nil when a key is missing.
func at(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func list(v any) []any { l, _ := v.([]any); return l }
func str(v any) string { s, _ := v.(string); return s }

func TestComposeFile(t *testing.T) {
	bins := binaries(t)
	d := docs(t, filepath.Join("compose", "compose.yaml"))
	if len(d) != 1 {
		t.Fatalf("%d documents", len(d))
	}
	services, _ := at(d[0], "services").(map[string]any)
	secrets, _ := at(d[0], "secrets").(map[string]any)
	for name, sec := range secrets {
		if f := str(at(sec, "file")); !strings.HasPrefix(f, "./secrets/") {
			t.Errorf("secret %s is %q, not a generated file in ./secrets", name, f)
		}
	}
	gi, _ := os.ReadFile(filepath.Join("compose", ".gitignore"))
	if !strings.Contains(string(gi), "secrets/") {
		t.Error("compose/secrets is not ignored by git")
	}
	chat := 0
	for name, svc := range services {
		deps := at(svc, "depends_on")
		var dnames []string
		switch v := deps.(type) {
		case []any:
			for _, x := range v {
				dnames = append(dnames, str(x))
			}
		case map[string]any:
			for k := range v {
				dnames = append(dnames, k)
			}
		}
		for _, dn := range dnames {
			if services[dn] == nil {
				t.Errorf("service %s depends on %s, which is not defined", name, dn)
			}
		}
		for _, s := range list(at(svc, "secrets")) {
			if secrets[str(s)] == nil {
				t.Errorf("service %s uses secret %v, which is not declared", name, s)
			}
		}
		cmd := list(at(svc, "command"))
		if len(cmd) == 0 || !strings.HasPrefix(str(cmd[0]), "chat-") {
			continue
		}
		chat++
		bin := str(cmd[0])
		env, _ := at(svc, "environment").(map[string]any)
		var names []string
		for k, v := range env {
			names = append(names, k)
			if strings.HasSuffix(k, "_FILE") && !strings.HasPrefix(str(v), "/run/secrets/") {
				t.Errorf("service %s: %s=%v is not a secret file", name, k, v)
			}
			if strings.Contains(k, "SECRET") && !strings.HasSuffix(k, "_FILE") {
				t.Errorf("service %s sets %s in plain text", name, k)
			}
		}
		checkEnv(t, "compose service "+name, bin, bins[bin], names)
		hc := strings.Join(func() []string {
			var out []string
			for _, x := range list(at(svc, "healthcheck", "test")) {
				out = append(out, str(x))
			}
			return out
		}(), " ")
		if !strings.Contains(hc, "/healthz") {
			t.Errorf("service %s: health check %q is not /healthz", name, hc)
		}
		if bin == "chat-node" {
			for _, k := range []string{"CHAT_NODE_ID", "CHAT_ADVERTISE", "CHAT_PEER_ADVERTISE", "CHAT_CLUSTER_SECRET_FILE", "CHAT_ZK_AUTH_FILE"} {
				if env[k] == nil {
					t.Errorf("node service %s does not set %s", name, k)
				}
			}
		}
	}
	if chat != 4 {
		t.Errorf("%d chat services, want 3 nodes and a gateway", chat)
	}
}

// k8sObjects reads every manifest in k8s/, by kind.
func k8sObjects(t *testing.T) map[string][]map[string]any {
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	out := map[string][]map[string]any{}
	for _, f := range files {
		for _, d := range docs(t, f) {
			kind := str(d["kind"])
			if kind == "" || str(d["apiVersion"]) == "" || str(at(d, "metadata", "name")) == "" {
				t.Errorf("%s: a document without kind, apiVersion or name", f)
			}
			if ns := str(at(d, "metadata", "namespace")); kind != "Namespace" && ns != "chat" {
				t.Errorf("%s: %s %v in namespace %q", f, kind, at(d, "metadata", "name"), ns)
			}
			out[kind] = append(out[kind], d)
		}
	}
	return out
}

// selects reports whether selector (matchLabels or a Service's map)
// selects labels.
func selects(selector, labels any) bool {
	sel, _ := selector.(map[string]any)
	lab, _ := labels.(map[string]any)
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if lab[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetesManifests(t *testing.T) {
	bins := binaries(t)
	objs := k8sObjects(t)
	if len(objs["Secret"]) != 0 {
		t.Error("a Secret is in the repository: it is created with kubectl (config.yaml)")
	}
	configs := map[string]map[string]any{}
	for _, c := range objs["ConfigMap"] {
		data, _ := c["data"].(map[string]any)
		configs[str(at(c, "metadata", "name"))] = data
	}
	var workloads []map[string]any
	workloads = append(workloads, objs["StatefulSet"]...)
	workloads = append(workloads, objs["Deployment"]...)
	if len(objs["StatefulSet"]) != 1 || len(objs["Deployment"]) != 1 {
		t.Fatalf("%d StatefulSets and %d Deployments, want the nodes and the gateway", len(objs["StatefulSet"]), len(objs["Deployment"]))
	}
	for _, w := range workloads {
		name := str(at(w, "metadata", "name"))
		pod := at(w, "spec", "template")
		labels := at(pod, "metadata", "labels")
		if !selects(at(w, "spec", "selector", "matchLabels"), labels) {
			t.Errorf("%s: its selector does not select its pods", name)
		}
		if at(pod, "spec", "securityContext", "runAsNonRoot") != true {
			t.Errorf("%s: pods may run as root", name)
		}
		for _, c := range list(at(pod, "spec", "containers")) {
			bin := str(list(at(c, "command"))[0])
			s, ok := bins[bin]
			if !ok {
				t.Fatalf("%s: command %q is not chat-node or chat-gateway", name, bin)
			}
			if at(c, "securityContext", "readOnlyRootFilesystem") != true || at(c, "securityContext", "allowPrivilegeEscalation") != false {
				t.Errorf("%s: container is not read-only and unprivileged", name)
			}
			ports := map[string]bool{}
			for _, p := range list(at(c, "ports")) {
				ports[str(at(p, "name"))] = true
			}
			for _, probe := range []string{"readinessProbe", "livenessProbe"} {
				pr := at(c, probe)
				if pr == nil {
					t.Errorf("%s: no %s", name, probe)
					continue
				}
				port := str(at(pr, "httpGet", "port")) + str(at(pr, "tcpSocket", "port"))
				if !ports[port] {
					t.Errorf("%s: %s on port %q, which the container does not declare", name, probe, port)
				}
			}
			if str(at(c, "readinessProbe", "httpGet", "path")) != "/healthz" {
				t.Errorf("%s: readiness is not /healthz", name)
			}
			if at(c, "resources", "requests") == nil || at(c, "resources", "limits") == nil {
				t.Errorf("%s: no resource requests and limits", name)
			}
			var names []string
			env := map[string]string{}
			fromPod := map[string]string{}
			for _, e := range list(at(c, "env")) {
				n := str(at(e, "name"))
				env[n] = str(at(e, "value"))
				if f := str(at(e, "valueFrom", "fieldRef", "fieldPath")); f != "" {
					fromPod[n] = f
					continue
				}
				names = append(names, n)
			}
			for _, ef := range list(at(c, "envFrom")) {
				cm := str(at(ef, "configMapRef", "name"))
				data, ok := configs[cm]
				if !ok {
					t.Errorf("%s: envFrom ConfigMap %q is not defined", name, cm)
				}
				for k := range data {
					// The ConfigMap serves both; each takes what it reads.
					if !bins["chat-node"].env[k] && !bins["chat-gateway"].env[k] {
						t.Errorf("ConfigMap %s: %s is read by neither binary", cm, k)
					}
				}
			}
			checkEnv(t, "k8s "+name, bin, s, names)
			mounted := map[string]bool{}
			for _, vm := range list(at(c, "volumeMounts")) {
				mounted[str(at(vm, "mountPath"))] = true
			}
			for n, v := range env {
				if strings.HasSuffix(n, "_FILE") && !mounted[filepath.Dir(v)] {
					t.Errorf("%s: %s=%s is not in a mounted volume", name, n, v)
				}
			}
			if bin == "chat-node" {
				if fromPod["POD_NAME"] != "metadata.name" || env["CHAT_NODE_ID"] != "$(POD_NAME)" {
					t.Errorf("%s: the node id is not the pod's name", name)
				}
				for _, k := range []string{"CHAT_ADVERTISE", "CHAT_PEER_ADVERTISE"} {
					if !strings.Contains(env[k], "$(POD_NAME)") {
						t.Errorf("%s: %s=%q is not the pod's own address", name, k, env[k])
					}
				}
				if env["CHAT_CLUSTER_SECRET_FILE"] == "" {
					t.Errorf("%s: no cluster secret", name)
				}
			}
		}
		secretVols := 0
		for _, v := range list(at(pod, "spec", "volumes")) {
			if sn := str(at(v, "secret", "secretName")); sn != "" {
				secretVols++
				if sn != "chat-secrets" {
					t.Errorf("%s: secret %q, want chat-secrets (config.yaml says how to make it)", name, sn)
				}
			}
		}
		if str(w["kind"]) == "StatefulSet" && secretVols == 0 {
			t.Errorf("%s: the nodes mount no Secret", name)
		}
		// A Service and a PodDisruptionBudget select the pods.
		svc := slices.ContainsFunc(objs["Service"], func(s map[string]any) bool { return selects(at(s, "spec", "selector"), labels) })
		pdb := slices.ContainsFunc(objs["PodDisruptionBudget"], func(p map[string]any) bool {
			return selects(at(p, "spec", "selector", "matchLabels"), labels)
		})
		if !svc || !pdb {
			t.Errorf("%s: Service selects its pods %v, PodDisruptionBudget %v", name, svc, pdb)
		}
		if str(w["kind"]) == "StatefulSet" {
			sn := str(at(w, "spec", "serviceName"))
			ok := slices.ContainsFunc(objs["Service"], func(s map[string]any) bool {
				return str(at(s, "metadata", "name")) == sn && str(at(s, "spec", "clusterIP")) == "None"
			})
			if !ok {
				t.Errorf("%s: serviceName %q is not a headless Service", name, sn)
			}
		}
	}
	for _, s := range objs["Service"] {
		for _, p := range list(at(s, "spec", "ports")) {
			if str(at(p, "targetPort")) == "" {
				t.Errorf("Service %v: port %v has no named targetPort", at(s, "metadata", "name"), at(p, "name"))
			}
		}
	}
}
