{{/* The release's name prefix: "tiket" for a release named tiket, else RELEASE-tiket. */}}
{{- define "tiket.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object has. */}}
{{- define "tiket.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selects every pod of the release (services and migration jobs). */}}
{{- define "tiket.releaseSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selects the pods of one service: (list $ NAME). */}}
{{- define "tiket.selector" -}}
{{ include "tiket.releaseSelector" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The Kubernetes name of one service's objects: (list $ NAME). */}}
{{- define "tiket.name" -}}
{{- printf "%s-%s" (include "tiket.fullname" (index . 0)) (index . 1) -}}
{{- end -}}

{{/* One service's settings: serviceDefaults overlaid with its block, as YAML (fromYaml). */}}
{{- define "tiket.service" -}}
{{- $root := index . 0 -}}
{{- $svc := index $root.Values.services (index . 1) -}}
{{- toYaml (mergeOverwrite (deepCopy $root.Values.serviceDefaults) (deepCopy $svc)) -}}
{{- end -}}

{{/* The names of the enabled services, sorted, as a YAML list (fromYamlArray). */}}
{{- define "tiket.enabled" -}}
{{- $names := list -}}
{{- range $name := keys .Values.services | sortAlpha -}}
{{- $svc := fromYaml (include "tiket.service" (list $ $name)) -}}
{{- if $svc.enabled }}{{ $names = append $names $name }}{{ end -}}
{{- end -}}
{{- toYaml $names -}}
{{- end -}}

{{/* The cluster DNS name of one service: (list $ NAME). */}}
{{- define "tiket.host" -}}
{{- printf "%s.%s.svc.cluster.local" (include "tiket.name" .) (index . 0).Release.Namespace -}}
{{- end -}}

{{/* The Istio principal of one service's ServiceAccount: (list $ NAME). */}}
{{- define "tiket.principal" -}}
{{- printf "cluster.local/ns/%s/sa/%s" (index . 0).Release.Namespace (include "tiket.name" .) -}}
{{- end -}}

{{- define "tiket.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Pod and container security: non-root, read-only root, no privilege, seccomp. */}}
{{- define "tiket.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tiket.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A secretKeyRef env entry: (list VARIABLE {name, key[, optional]}). */}}
{{- define "tiket.secretEnv" -}}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ (index . 1).name }}
      key: {{ (index . 1).key }}
      {{- if (index . 1).optional }}
      optional: true
      {{- end }}
{{- end -}}
