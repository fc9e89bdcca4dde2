{{/*
Names, labels, images and the shared pod security settings of every Konfer object.
*/}}

{{- define "konfer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "konfer.fullname" -}}
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

{{/* Object name of one component: <fullname>-<component>. */}}
{{- define "konfer.component" -}}
{{- printf "%s-%s" (include "konfer.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "konfer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "konfer.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "konfer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: konfer
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "konfer.selectorLabels" . }}
{{- end -}}

{{/* Full image reference: registry/repository:tag (tag defaults to the chart's appVersion). */}}
{{- define "konfer.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $tag := default .root.Chart.AppVersion (default .root.Values.image.tag .image.tag) -}}
{{- $ref := printf "%s:%s" .image.repository $tag -}}
{{- if .image.digest -}}{{- $ref = printf "%s@%s" .image.repository .image.digest -}}{{- end -}}
{{- if $registry -}}{{- printf "%s/%s" $registry $ref -}}{{- else -}}{{- $ref -}}{{- end -}}
{{- end -}}

{{/* Pod-level security: non-root, RuntimeDefault seccomp, group-writable volumes. */}}
{{- define "konfer.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
runAsGroup: {{ .uid | default 10001 }}
fsGroup: {{ .uid | default 10001 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security: read-only root filesystem, no privilege escalation, no capabilities. */}}
{{- define "konfer.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Names of the Secrets the workloads read; an existingSecret replaces the generated one. */}}
{{- define "konfer.secret.signingKeys" -}}
{{- default (include "konfer.component" (dict "root" . "name" "signing-keys")) .Values.signingKeys.existingSecret -}}
{{- end -}}

{{- define "konfer.secret.database" -}}
{{- if .Values.postgresql.enabled -}}
{{- default (include "konfer.component" (dict "root" . "name" "postgresql")) .Values.postgresql.auth.existingSecret -}}
{{- else -}}
{{- default (include "konfer.component" (dict "root" . "name" "database")) .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "konfer.secret.redis" -}}
{{- if .Values.redis.enabled -}}
{{- default (include "konfer.component" (dict "root" . "name" "redis")) .Values.redis.auth.existingSecret -}}
{{- else -}}
{{- default (include "konfer.component" (dict "root" . "name" "redis-url")) .Values.externalRedis.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "konfer.secret.s3" -}}
{{- if .Values.minio.enabled -}}
{{- default (include "konfer.component" (dict "root" . "name" "minio")) .Values.minio.auth.existingSecret -}}
{{- else -}}
{{- default (include "konfer.component" (dict "root" . "name" "s3")) .Values.externalS3.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "konfer.secret.turn" -}}
{{- default (include "konfer.component" (dict "root" . "name" "turn")) .Values.turn.existingSecret -}}
{{- end -}}

{{/* A value kept across upgrades: the one already in the cluster's Secret, else a new random one. */}}
{{- define "konfer.keepOrRandom" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum (.length | default 32) -}}
{{- end -}}
{{- end -}}

{{- define "konfer.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s:9000" (include "konfer.component" (dict "root" . "name" "minio")) -}}
{{- else -}}
{{- .Values.externalS3.endpoint -}}
{{- end -}}
{{- end -}}

{{/* TURN/STUN URLs handed to clients at /join (KONFER_TURN_URLS, KONFER_STUN_URLS). */}}
{{- define "konfer.turnHost" -}}
{{- required "turn.publicHost is required when turn.enabled (the address clients reach coturn at)" .Values.turn.publicHost -}}
{{- end -}}

{{/*
Environment every Konfer process of the release shares: the settings of
konfer.core.settings.Settings as KONFER_* variables, secrets by reference.
*/}}
{{- define "konfer.commonEnv" -}}
- name: KONFER_ENV
  value: {{ .Values.config.env | quote }}
- name: KONFER_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: KONFER_JSON_LOGS
  value: "true"
- name: KONFER_RUNTIME
  value: kubernetes
- name: KONFER_KUBERNETES_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: KONFER_DATA_DIR
  value: /var/lib/konfer
- name: KONFER_SIGNING_KEYS_DIR
  value: /etc/konfer/keys
{{- with .Values.signingKeys.activeKeyId }}
- name: KONFER_SIGNING_KEY_ID
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.publicUrl }}
- name: KONFER_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
- name: KONFER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "konfer.secret.database" . }}
      key: {{ if .Values.postgresql.enabled }}database-url{{ else }}{{ .Values.externalDatabase.existingSecretKey }}{{ end }}
- name: KONFER_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "konfer.secret.redis" . }}
      key: {{ if .Values.redis.enabled }}redis-url{{ else }}{{ .Values.externalRedis.existingSecretKey }}{{ end }}
- name: KONFER_S3_ENDPOINT
  value: {{ include "konfer.s3Endpoint" . | quote }}
- name: KONFER_S3_BUCKET
  value: {{ ternary .Values.minio.bucket .Values.externalS3.bucket .Values.minio.enabled | quote }}
- name: KONFER_S3_SECURE
  value: {{ ternary "false" (toString .Values.externalS3.secure) .Values.minio.enabled | quote }}
{{- if and (not .Values.minio.enabled) .Values.externalS3.region }}
- name: KONFER_S3_REGION
  value: {{ .Values.externalS3.region | quote }}
{{- end }}
- name: KONFER_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "konfer.secret.s3" . }}
      key: access-key
- name: KONFER_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "konfer.secret.s3" . }}
      key: secret-key
{{- if .Values.tracing.otlpEndpoint }}
- name: KONFER_OTLP_ENDPOINT
  value: {{ .Values.tracing.otlpEndpoint | quote }}
{{- end }}
{{- range $name, $value := .Values.config.extra }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- include "konfer.devEnv" . }}
{{- end -}}

{{- define "konfer.devEnv" -}}
{{- with .Values.devPythonPath }}
- name: PYTHONPATH
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Writable scratch every Konfer process mounts (the root filesystem is read-only). */}}
{{- define "konfer.scratchVolumes" -}}
- name: data
  emptyDir:
    sizeLimit: 256Mi
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmpSize | default "1Gi" }}
{{- end -}}

{{- define "konfer.scratchMounts" -}}
- name: data
  mountPath: /var/lib/konfer
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/*
Rules of the operator's ClusterRole (kind "ClusterRole") or of its leader-election Role
(kind "Role"), read from operator/rbac/operator.yaml (linked into the chart as
files/operator-rbac.yaml): the one list of what the operator may do.
*/}}
{{- define "konfer.operatorRules" -}}
{{- $text := .root.Files.Get "files/operator-rbac.yaml" -}}
{{- if not $text -}}
{{- fail "files/operator-rbac.yaml (operator/rbac/operator.yaml) is missing from the chart" -}}
{{- end -}}
{{- $rules := list -}}
{{- range $doc := regexSplit "(?m)^---\\s*$" $text -1 -}}
{{- $obj := fromYaml $doc -}}
{{- if and $obj (eq (toString $obj.kind) $.kind) -}}
{{- $rules = $obj.rules -}}
{{- end -}}
{{- end -}}
{{- if not $rules -}}
{{- fail (printf "operator/rbac/operator.yaml has no %s with rules" .kind) -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}

{{- define "konfer.secret.mediaEnv" -}}
{{- default (include "konfer.component" (dict "root" . "name" "media-env")) .Values.operator.mediaEnvSecret -}}
{{- end -}}
