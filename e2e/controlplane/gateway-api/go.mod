// Pins the Gateway API release whose CRDs (config/crd/ in its module zip) the e2e tests install; nothing is
// built from it. Its go.mod asks for Go 1.27, so build.sh downloads it with GOTOOLCHAIN=go1.27.3.
module tmi.dev/e2e/controlplane/gateway-api

go 1.27.0

require sigs.k8s.io/gateway-api v1.7.0
