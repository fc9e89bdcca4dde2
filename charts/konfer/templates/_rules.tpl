{{/*
Alert rules of the API documentation's monitoring section, on the metrics the code exports:
http_requests_total / http_request_duration_seconds (konfer.api.metrics), the process_*
series of the api's ProcessCollector, konfer_sfu_cpu_seconds_total (konfer.sfu.metrics).
Shared by the PrometheusRule and by the tests, which check them with promtool.
*/}}
{{- define "konfer.ruleGroups" -}}
{{- $sel := printf "konfer_release=%q" .Release.Name -}}
{{- $r := .Values.monitoring.rules -}}
groups:
  - name: konfer.availability
    rules:
      - alert: ServiceDown
        expr: up{ {{- $sel -}} } == 0
        for: 1m
        labels:
          severity: critical
        annotations:
          summary: "{{ "{{" }} $labels.konfer_component {{ "}}" }} target {{ "{{" }} $labels.instance {{ "}}" }} is down"
          description: "Prometheus could not scrape {{ "{{" }} $labels.pod {{ "}}" }} for more than 1 minute."
  - name: konfer.resources
    rules:
      - alert: HighCPUUsage
        expr: |-
          (sum by (namespace, pod, konfer_component) (rate(process_cpu_seconds_total{ {{- $sel -}} }[2m])) > {{ $r.cpuThreshold }})
          or
          (sum by (namespace, pod, konfer_component) (rate(konfer_sfu_cpu_seconds_total{ {{- $sel -}} }[2m])) > {{ $r.cpuThreshold }})
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "{{ "{{" }} $labels.pod {{ "}}" }} uses more than {{ mulf $r.cpuThreshold 100 }}% of a core"
          description: "CPU above {{ mulf $r.cpuThreshold 100 }}% of one core for 5 minutes (value {{ "{{" }} $value | humanizePercentage {{ "}}" }})."
      - alert: HighMemoryUsage
        expr: max by (namespace, pod, konfer_component) (process_resident_memory_bytes{ {{- $sel -}} }) > {{ $r.memoryThresholdBytes | int64 }}
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "{{ "{{" }} $labels.pod {{ "}}" }} uses more than {{ $r.memoryThresholdBytes | int64 }} bytes"
          description: "Resident memory {{ "{{" }} $value | humanize1024 {{ "}}" }}B for 5 minutes."
  - name: konfer.api
    rules:
      - alert: HighErrorRate
        expr: |-
          sum by (namespace) (rate(http_requests_total{ {{- $sel -}} ,status_code=~"5.."}[1m]))
            / sum by (namespace) (rate(http_requests_total{ {{- $sel -}} }[1m])) > {{ $r.errorRateThreshold }}
        for: 2m
        labels:
          severity: critical
        annotations:
          summary: "More than {{ mulf $r.errorRateThreshold 100 }}% of api requests fail"
          description: "{{ "{{" }} $value | humanizePercentage {{ "}}" }} of requests answered 5xx for 2 minutes."
      - alert: SlowResponseTime
        expr: |-
          histogram_quantile(0.95, sum by (namespace, le) (rate(http_request_duration_seconds_bucket{ {{- $sel -}} }[1m]))) > {{ $r.latencyThresholdSeconds }}
        for: 3m
        labels:
          severity: warning
        annotations:
          summary: "api p95 latency above {{ $r.latencyThresholdSeconds }} s"
          description: "95th percentile {{ "{{" }} $value | humanizeDuration {{ "}}" }} for 3 minutes."
{{- end -}}
