{{/*
The release's object names: the release name when it already says "modelrollout", else
"<release>-modelrollout"; at most 63 characters (a DNS label, as Service names need).
*/}}
{{- define "modelrollout.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelrollout.labels" -}}
{{ include "modelrollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* kopf peering: only with more than one replica; one replica runs --standalone. */}}
{{- define "modelrollout.peering" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end -}}
{{- end -}}

{{/* The name of kopf's peering object(s), the value of --peering. */}}
{{- define "modelrollout.peeringName" -}}modelrollout{{- end -}}

{{/*
The rules for the namespaced resources the operator touches: a Role's rules in each watched
namespace, or part of the ClusterRole when it watches all of them. Each verb is one the
operator was seen using (tests/chart/test_rbac_matches_usage.py runs it under these rules).
*/}}
{{- define "modelrollout.namespacedRules" -}}
# Experiments: kopf lists and watches them, and patches its finalizer and annotations;
# the operator reads one before each tick.
- apiGroups: ["modelrollout.io"]
  resources: ["modelexperiments"]
  verbs: ["get", "list", "watch", "patch"]
# The operator writes phase, step, weights, decisions and conditions to the status.
- apiGroups: ["modelrollout.io"]
  resources: ["modelexperiments/status"]
  verbs: ["patch"]
# Traffic moves by patching the weights of the VirtualService an experiment names.
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "patch"]
# Events on experiments (the operator's decisions; kopf's warnings).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.reports.configMaps }}
# A/B test reports, written into a ConfigMap <experiment>-report (owned by the experiment).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "patch"]
{{- end }}
{{- if .Values.rbac.readSecrets }}
# Webhook and notification URLs and tokens from Secrets (urlFrom, tokenFrom), by name only.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- if and (include "modelrollout.peering" .) .Values.watchNamespaces }}
# kopf peering between replicas: heartbeats in the KopfPeering of each watched namespace.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- end -}}

{{/* What kopf needs cluster-wide in either mode, and its peering in cluster-wide mode. */}}
{{- define "modelrollout.clusterRules" -}}
# kopf notices CRDs installed or upgraded after it started.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.watchNamespaces }}
# kopf notices watched namespaces being created or deleted after it started.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- else if (include "modelrollout.peering" .) }}
# kopf peering between replicas: heartbeats in the cluster's ClusterKopfPeering.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- end -}}
