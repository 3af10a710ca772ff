// Command kstatus prints how kstatus — the status library behind Flux's health checks, `kubectl wait`-style
// tooling and cli-utils — reads a Kubernetes object: it takes the object as JSON (or YAML) on standard input and
// prints one line of JSON {"status": "InProgress|Current|Failed|...", "message": "..."}.
//
// The tests use it to prove that a TmiInstance's status is read correctly by a real kstatus implementation,
// not by our own idea of it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	// Through the unstructured JSON scheme, as client-go decodes objects: integers stay int64.
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		fail(fmt.Errorf("parsing the object: %w", err))
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(js); err != nil {
		fail(fmt.Errorf("decoding the object: %w", err))
	}
	res, err := status.Compute(obj)
	if err != nil {
		fail(err)
	}
	out, _ := json.Marshal(map[string]string{"status": res.Status.String(), "message": res.Message})
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(2)
}
