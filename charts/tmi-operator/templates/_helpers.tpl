{{- define "tmi-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tmi-operator.serviceAccountName" -}}
{{- default (include "tmi-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "tmi-operator.selectorLabels" -}}
app.kubernetes.io/name: tmi-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tmi-operator.labels" -}}
{{ include "tmi-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
The operator's permissions on the namespaces it manages: exactly the verbs it uses (e2e/tests/chart.rs records
every request the operator makes and fails when this list grants more or less).
*/}}
{{- define "tmi-operator.managedRules" -}}
{{- /* Everything the operator owns is read from label-filtered watch caches: no `get` on those. */}}
- apiGroups: ["tmi.dev"]
  resources: ["tmiinstances"]
  verbs: ["list", "watch"]
- apiGroups: ["tmi.dev"]
  resources: ["tmiinstances/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims", "serviceaccounts", "services"]
  verbs: ["create", "list", "patch", "watch"]
{{- /* ConfigMaps: its own are cached; ConfigMaps a TmiInstance references are read with `get`. */}}
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "get", "list", "patch", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["create", "list", "patch", "watch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "delete", "list", "patch", "watch"]
{{- /* spec.exposure: the Ingress or HTTPRoute and the cert-manager Certificate; deleted when the exposure changes. */}}
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["create", "delete", "list", "patch", "watch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["create", "delete", "list", "patch", "watch"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["create", "delete", "list", "patch", "watch"]
{{- /* CertificateRequests: listed (uncached) only while a Certificate is not Ready, to say why. */}}
- apiGroups: ["cert-manager.io"]
  resources: ["certificaterequests"]
  verbs: ["list"]
{{- /* Secrets: metadata is watched; referenced Secrets are read when they change; the JWT key is created once. */}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "get", "list", "watch"]
{{- /* Migrate Jobs: cached; created once per upgrade; failed ones deleted when the version is set back. */}}
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "delete", "list", "watch"]
{{- /* Pods: listed (uncached) only while a rollout is incomplete, to say why the server pods fail, and once a
migrate Job finished, to read its result. */}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
