{{/* Base name of the chart's objects. */}}
{{- define "svcreg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-qualified unless the release name already contains the chart name. */}}
{{- define "svcreg.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "svcreg.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "svcreg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: svcreg
{{- end -}}

{{/* Selector labels shared by every pod that serves discovery (the Service selects on these). */}}
{{- define "svcreg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "svcreg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "svcreg.operatorServiceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "svcreg.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "svcreg.discoveryServiceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- printf "%s-discovery" (include "svcreg.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "svcreg.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Discovery-only replicas exist when a replica count or an autoscaler asks for them. */}}
{{- define "svcreg.discoveryEnabled" -}}
{{- if or (gt (int .Values.discovery.replicas) 0) .Values.discovery.autoscaling.enabled -}}true{{- end -}}
{{- end -}}

{{/* Arguments common to both kinds of pod: scope, audiences, CORS, long-poll cap, logs, metrics. */}}
{{- define "svcreg.commonArgs" -}}
- run
- --port={{ .Values.service.port }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- range .Values.tokenAudiences }}
- --token-audience={{ . }}
{{- end }}
{{- range .Values.corsOrigins }}
- --cors-origin={{ . }}
{{- end }}
- --max-wait={{ .Values.maxWaitSeconds }}
{{- if not .Values.registrationApi.enabled }}
- --no-registration-api
{{- end }}
- --log-level={{ .Values.logLevel }}
- --log-format={{ .Values.logFormat }}
{{- if .Values.tls.secretName }}
- --tls-cert-file=/etc/svcreg/tls/tls.crt
- --tls-key-file=/etc/svcreg/tls/tls.key
{{- end }}
{{- if .Values.accessLog }}
- --access-log
{{- end }}
{{- if .Values.serviceMetrics }}
- --service-metrics
{{- end }}
{{- end -}}

{{/* The container's hardening and probes, shared by both Deployments. */}}
{{- define "svcreg.containerCommon" -}}
image: {{ include "svcreg.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
ports:
  - name: http
    containerPort: {{ .Values.service.port }}
    protocol: TCP
livenessProbe:
  httpGet: {path: /healthz, port: http, scheme: {{ include "svcreg.scheme" . | upper }}}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http, scheme: {{ include "svcreg.scheme" . | upper }}}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
startupProbe:
  httpGet: {path: /healthz, port: http, scheme: {{ include "svcreg.scheme" . | upper }}}
  periodSeconds: 2
  failureThreshold: 30
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if .Values.tls.secretName }}
  - name: tls
    mountPath: /etc/svcreg/tls
    readOnly: true
  {{- end }}
{{- end -}}

{{/* http, or https when tls.secretName names the serving certificate's Secret. */}}
{{- define "svcreg.scheme" -}}
{{- if .Values.tls.secretName }}https{{ else }}http{{ end -}}
{{- end -}}

{{/* The pod volumes both Deployments share: /tmp, and the serving certificate when TLS is on. */}}
{{- define "svcreg.volumes" -}}
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
{{- if .Values.tls.secretName }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
{{- end }}
{{- end -}}

{{/* Namespaced rules of the operator and of discovery replicas (see rbac.yaml). */}}
{{- define "svcreg.operatorRules" -}}
- apiGroups: [svcreg.io]
  resources: [serviceregistrations]
  verbs: [get, list, watch, delete]
- apiGroups: [svcreg.io]
  resources: [serviceregistrations/status]
  verbs: [patch]
- apiGroups: [svcreg.io]
  resources: [servicepolicies]
  verbs: [list, watch]
- apiGroups: [svcreg.io]
  resources: [servicepolicies/status]
  verbs: [patch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.probeCaBundles.configMaps }}
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
{{- end }}
{{- if .Values.probeCaBundles.secrets }}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- if .Values.registrationApi.enabled }}
{{- if .Values.registrationApi.impersonate }}
- apiGroups: [authentication.k8s.io]
  resources: [serviceaccounts]
  verbs: ["impersonate:serviceaccount"]
- apiGroups: [svcreg.io]
  resources: [serviceregistrations]
  verbs:
    - "impersonate-on:serviceaccount:create"
    - "impersonate-on:serviceaccount:patch"
    - "impersonate-on:serviceaccount:delete"
{{- else }}
- apiGroups: [svcreg.io]
  resources: [serviceregistrations]
  verbs: [create, patch]
{{- end }}
{{- end }}
{{- end }}
{{- define "svcreg.discoveryRules" -}}
- apiGroups: [svcreg.io]
  resources: [serviceregistrations]
  verbs: [get, list, watch]
- apiGroups: [svcreg.io]
  resources: [servicepolicies]
  verbs: [list, watch]
{{- end }}
