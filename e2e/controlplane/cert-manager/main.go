// Command cert-manager-controller runs the real cert-manager controllers, from the cert-manager library module,
// against a kubeconfig: the tests' stand-in for cert-manager's own controller binary.
//
// cert-manager's `main` lives in a module of its own (github.com/cert-manager/cert-manager/controller-binary)
// that the Go module proxy does not serve, and its Venafi issuer needs github.com/Venafi/vcert/v5, which the
// proxy refuses. The controllers themselves are in the served library module, so this program wires them up
// the way controller-binary/app/controller.go does (a controller.ContextFactory, one Constructor per enabled
// controller from controller.Known(), then the shared informer factories), with:
//
//   - the controllers: the certificates controllers (trigger, key-manager, request-manager, issuing,
//     readiness, revision-manager), issuers and clusterissuers, and the CertificateRequest approver and the
//     CA and SelfSigned CertificateRequest issuers;
//   - the CA and SelfSigned issuer backends (for the Issuer/ClusterIssuer Ready condition).
//
// Left out, and why:
//   - ACME (orders, challenges, the ACME issuer): needs an ACME server on the internet; Vault and Venafi
//     issuers: no such servers here, and Venafi's SDK is refused by the proxy;
//   - the ingress-shim and gateway-shim (certificate-shim): the operator creates explicit Certificate objects;
//   - CertificateSigningRequest controllers and certificates-metrics: unused by the tests;
//   - leader election (one controller per test cluster), the metrics, healthz and pprof servers, and the
//     configuration-file loading: flags below carry the few settings that matter.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/cert-manager/cert-manager/pkg/controller"
	crapprover "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// The issuer backends the issuers and clusterissuers controllers set up (they register themselves).
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

var enabled = sets.New(
	trigger.ControllerName,
	keymanager.ControllerName,
	requestmanager.ControllerName,
	issuing.ControllerName,
	readiness.ControllerName,
	revisionmanager.ControllerName,
	issuers.ControllerName,
	clusterissuers.ControllerName,
	crapprover.ControllerName,
	crca.CRControllerName,
	crselfsigned.CRControllerName,
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "path to a kubeconfig")
	clusterResourceNamespace := flag.String("cluster-resource-namespace", "cert-manager",
		"namespace holding the Secrets that ClusterIssuers refer to (upstream flag of the same name)")
	workers := flag.Int("concurrent-workers", 5, "workers per controller (upstream default 5)")
	flag.Parse()

	logf.InitLogs()
	defer logf.FlushLogs()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "cert-manager-controller")
	if err := run(ctx, *kubeconfig, *clusterResourceNamespace, *workers); err != nil {
		logf.Log.Error(err, "cert-manager controller failed")
		logf.FlushLogs()
		os.Exit(1)
	}
}

func run(rootCtx context.Context, kubeconfig, clusterResourceNamespace string, workers int) error {
	log := logf.FromContext(rootCtx)
	g, rootCtx := errgroup.WithContext(rootCtx)

	// The HTTP-01 solver quantities are parsed and passed as upstream does (upstream defaults), although ACME
	// is not run: the Context carries them.
	q := resource.MustParse
	ctxFactory, err := controller.NewContextFactory(rootCtx, controller.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   20, // upstream defaults
		KubernetesAPIBurst: 50,
		ACMEOptions: controller.ACMEOptions{
			HTTP01SolverResourceRequestCPU:    q("10m"),
			HTTP01SolverResourceRequestMemory: q("64Mi"),
			HTTP01SolverResourceLimitsCPU:     q("100m"),
			HTTP01SolverResourceLimitsMemory:  q("64Mi"),
			DNS01CheckAuthoritative:           true,
		},
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace: clusterResourceNamespace,
		},
	})
	if err != nil {
		return err
	}
	ctx, err := ctxFactory.Build()
	if err != nil {
		return err
	}
	log.Info(fmt.Sprintf("enabled controllers: %s", sets.List(enabled)))

	for n, fn := range controller.Known() {
		if !enabled.Has(n) {
			continue
		}
		iface, err := fn(ctxFactory)
		if err != nil {
			return fmt.Errorf("error starting controller %s: %w", n, err)
		}
		log.Info("starting controller", "controller", n)
		g.Go(func() error { return iface.Run(workers, rootCtx) })
	}

	ctx.SharedInformerFactory.Start(rootCtx.Done())
	ctx.KubeSharedInformerFactory.Start(rootCtx.Done())
	ctx.HTTP01ResourceMetadataInformersFactory.Start(rootCtx.Done())
	log.Info("controllers started")

	if err := g.Wait(); err != nil {
		return fmt.Errorf("error running controllers: %w", err)
	}
	ctx.HTTP01ResourceMetadataInformersFactory.Shutdown()
	ctx.KubeSharedInformerFactory.Shutdown()
	ctx.SharedInformerFactory.Shutdown()
	return nil
}
