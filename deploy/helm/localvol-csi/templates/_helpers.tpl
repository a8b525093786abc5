{{/* The namespace every namespaced object goes into. */}}
{{- define "localvol.namespace" -}}
{{- .Values.namespace.name -}}
{{- end -}}

{{/* Labels on every object (and pod template), as deploy/base's kustomization sets them. */}}
{{- define "localvol.labels" -}}
app.kubernetes.io/part-of: localvol-csi
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* An image reference from {repository, tag}. */}}
{{- define "localvol.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{/* The driver's socket directory on the host, under the kubelet's plugin directory. */}}
{{- define "localvol.pluginDir" -}}
{{- printf "%s/plugins/%s" .Values.kubeletDir .Values.driverName -}}
{{- end -}}

{{/* Whether the driver registers itself and serves /healthz (else the upstream sidecars do). */}}
{{- define "localvol.selfRegistration" -}}
{{- if eq .Values.registration "driver" }}true{{ end -}}
{{- end -}}
