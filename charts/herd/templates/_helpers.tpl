{{/* Names shared by the templates. */}}

{{- define "herd.fullname" -}}
{{- if contains "herd" .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-herd" .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* herd-control's Deployment, ServiceAccount and Service. */}}
{{- define "herd.control" -}}
{{- printf "%s-control" (include "herd.fullname" .) -}}
{{- end -}}

{{- define "herd.issuerSecret" -}}
{{- if .Values.identity.issuer.existingSecret -}}
{{- .Values.identity.issuer.existingSecret -}}
{{- else -}}
{{- printf "%s-issuer" (include "herd.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "herd.trustAnchors" -}}
{{- printf "%s-trust-anchors" (include "herd.fullname" .) -}}
{{- end -}}

{{- define "herd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The SPIFFE ID herd-control presents: its own ServiceAccount's identity. */}}
{{- define "herd.controlIdentity" -}}
{{- printf "spiffe://%s/ns/%s/sa/%s" .Values.identity.trustDomain .Release.Namespace (include "herd.control" .) -}}
{{- end -}}

{{- define "herd.labels" -}}
app.kubernetes.io/name: herd
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "herd.controlSelector" -}}
app.kubernetes.io/name: herd
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end -}}
