{{/* Names and labels. */}}
{{- define "filedriver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* At most 50 characters, so "<fullname>-controller" and the like stay DNS labels. */}}
{{- define "filedriver.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A Service name is a DNS label (63): "-controller-metrics" takes 19. */}}
{{- define "filedriver.metricsServiceName" -}}
{{- printf "%s-%s-metrics" (include "filedriver.fullname" .root | trunc 44 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "filedriver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "filedriver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "filedriver.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "filedriver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* repository:tag, with @digest when one is pinned (the digest is what the runtime pulls). */}}
{{- define "filedriver.imageRef" -}}
{{- $ref := printf "%s:%s" .repository .tag -}}
{{- if .digest }}{{ $ref = printf "%s@%s" $ref .digest }}{{ end -}}
{{- $ref -}}
{{- end -}}

{{- define "filedriver.image" -}}
{{- include "filedriver.imageRef" (dict "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag) "digest" .Values.image.digest) -}}
{{- end -}}

{{- define "filedriver.sidecarImage" -}}
{{- include "filedriver.imageRef" .image -}}
{{- end -}}

{{/* image and imagePullPolicy lines of a sidecar container. */}}
{{- define "filedriver.sidecarImageLines" -}}
image: {{ include "filedriver.sidecarImage" . }}
imagePullPolicy: {{ .image.pullPolicy | default "IfNotPresent" }}
{{- end -}}

{{/*
The nodes a pod set may run on: linux only (the images are linux/amd64 and
arm64), plus the admin's selector, which wins on the same key.
*/}}
{{- define "filedriver.nodeSelector" -}}
{{- toYaml (mergeOverwrite (dict "kubernetes.io/os" "linux") (deepCopy (default dict .))) -}}
{{- end -}}

{{/* Pod template metadata: the chart's labels, then the admin's pod labels and annotations. */}}
{{- define "filedriver.podMetadata" -}}
labels:
  {{- include "filedriver.labels" .root | nindent 2 }}
  app.kubernetes.io/component: {{ .component }}
  {{- with .values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Where the host holds a mount: the admin's hostPath, or for an nfs mount the
directory its share pod binds the export onto (see nfs-shares.yaml).
*/}}
{{- define "filedriver.hostPath" -}}
{{- if .mount.hostPath -}}
{{- .mount.hostPath -}}
{{- else -}}
{{- printf "%s/%s/%s/%s" .root.Values.nfsSharesDir .root.Release.Namespace (include "filedriver.fullname" .root) .mount.name -}}
{{- end -}}
{{- end -}}

{{/*
Where a mount appears inside the driver's pods. A hostPath mount's *parent*
is bound at /filedriver/hosts/<name> and the share is looked for below it:
inside a container every volume is a mount point, so binding the share's own
directory would make an unmounted share (an empty local directory) look
mounted to the driver's mountinfo check. Through the parent, the share is a
mount point only when the host has it mounted (propagated HostToContainer).
*/}}
{{- define "filedriver.mountPath" -}}
{{- printf "/filedriver/hosts/%s/%s" .mount.name (base (include "filedriver.hostPath" .)) -}}
{{- end -}}

{{- define "filedriver.mountArgs" -}}
{{- range .Values.mounts }}
- --mount={{ .name }}={{ include "filedriver.mountPath" (dict "mount" . "root" $) }}
{{- end }}
{{- end -}}

{{- define "filedriver.mountVolumeMounts" -}}
{{- range .Values.mounts }}
- name: mount-{{ .name }}
  mountPath: /filedriver/hosts/{{ .name }}
  mountPropagation: HostToContainer
{{- end }}
{{- end -}}

{{- define "filedriver.mountVolumes" -}}
{{- range .Values.mounts }}
- name: mount-{{ .name }}
  hostPath:
    path: {{ dir (include "filedriver.hostPath" (dict "mount" . "root" $)) }}
    # Created empty where missing: a node without the share then runs and
    # simply does not offer this mount.
    type: DirectoryOrCreate
{{- end }}
{{- end -}}

{{/*
Node affinity that keeps the controller on a node with every share: the
topology labels kubelet puts on a node for each share its node plugin offers
(<driverName>/mount-<name>: "true"), added to each of the admin's terms.
*/}}
{{- define "filedriver.controllerAffinity" -}}
{{- $affinity := deepCopy (default dict .Values.controller.affinity) -}}
{{- if .Values.controller.followShares -}}
{{- $exprs := list -}}
{{- range .Values.mounts -}}
{{- $exprs = append $exprs (dict "key" (printf "%s/mount-%s" $.Values.driverName .name) "operator" "In" "values" (list "true")) -}}
{{- end -}}
{{- $na := default dict (get $affinity "nodeAffinity") -}}
{{- $required := default dict (get $na "requiredDuringSchedulingIgnoredDuringExecution") -}}
{{- $terms := list -}}
{{- range (default (list dict) (get $required "nodeSelectorTerms")) -}}
{{- $term := deepCopy . -}}
{{- $_ := set $term "matchExpressions" (concat (default list (get $term "matchExpressions")) $exprs) -}}
{{- $terms = append $terms $term -}}
{{- end -}}
{{- $_ := set $required "nodeSelectorTerms" $terms -}}
{{- $_ := set $na "requiredDuringSchedulingIgnoredDuringExecution" $required -}}
{{- $_ := set $affinity "nodeAffinity" $na -}}
{{- end -}}
{{- with $affinity -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{/*
A leader-elected sidecar's --http-endpoint: its metrics, and a liveness probe
on /healthz/leader-election, which fails when it stopped renewing its lease
while it believes it leads (a hung API connection) so kubelet restarts it.
*/}}
{{- define "filedriver.sidecarHealth" -}}
ports:
  - name: {{ .name }}
    containerPort: {{ .port }}
livenessProbe:
  httpGet:
    path: /healthz/leader-election
    port: {{ .name }}
  initialDelaySeconds: 10
  periodSeconds: 20
  timeoutSeconds: 10
  failureThreshold: 3
{{- end -}}

{{/* Every controller container: nothing to escalate to, nothing to write but its volumes. */}}
{{- define "filedriver.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* The driver's settings shared by both pods. */}}
{{- define "filedriver.commonArgs" -}}
- --endpoint=unix:///csi/csi.sock
- --driver-name={{ .Values.driverName }}
- --log-level={{ .Values.logLevel }}
{{- if .Values.metrics.enabled }}
- --metrics-address=:{{ .Values.metrics.port }}
{{- end }}
{{- include "filedriver.mountArgs" . }}
{{- end -}}

{{/*
Checks the schema cannot express; each fails the render with one clear line.
*/}}
{{- define "filedriver.validate" -}}
{{- $names := list -}}
{{- range .Values.mounts -}}
{{- if and .hostPath .nfs -}}
{{- fail (printf "mounts: %s has both hostPath and nfs; give one" .name) -}}
{{- end -}}
{{- if not (or .hostPath .nfs) -}}
{{- fail (printf "mounts: %s needs hostPath (a directory the share is mounted on, on the nodes) or nfs {server, path}" .name) -}}
{{- end -}}
{{- if and .nfs (not $.Values.nfsSharesDir) -}}
{{- fail (printf "mounts: %s is an nfs mount, which needs nfsSharesDir" .name) -}}
{{- end -}}
{{- if and .hostPath (or (has ".." (splitList "/" .hostPath)) (has "." (splitList "/" .hostPath))) -}}
{{- fail (printf "mounts: %s hostPath %s has a . or .. segment; give the plain path (its parent is bound into the pods)" .name .hostPath) -}}
{{- end -}}
{{- if has .name $names -}}
{{- fail (printf "mounts: %s is listed twice" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- $qmp := printf "%s/plugins/%s/dp/qmp.sock" .Values.kubeletDir .Values.driverName -}}
{{- if gt (len $qmp) 107 -}}
{{- fail (printf "kubeletDir, driverName: the data plane's QMP socket %s has %d bytes, more than a unix socket path takes (107); shorten one of them" $qmp (len $qmp)) -}}
{{- end -}}
{{- $defaults := 0 -}}
{{- range .Values.storageClasses -}}
{{- $sc := . -}}
{{- range .mounts -}}
{{- if not (has . $names) -}}
{{- fail (printf "storageClasses: %s names mount %s, which is not in mounts (%s)" $sc.name . (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- if .default }}{{ $defaults = add1 $defaults }}{{ end -}}
{{- end -}}
{{- if gt $defaults 1 -}}
{{- fail "storageClasses: more than one has default: true" -}}
{{- end -}}
{{- $hostPaths := list -}}
{{- range .Values.mounts }}{{ if .hostPath }}{{ $hostPaths = append $hostPaths .name }}{{ end }}{{ end -}}
{{- if and $hostPaths (not .Values.controller.followShares) (not .Values.controller.nodeSelector) (not .Values.controller.affinity) (gt (int .Values.controller.replicas) 0) -}}
{{- fail (printf "controller: hostPath mounts (%s) exist on some nodes only, and nothing places the controller there: keep controller.followShares=true, or set controller.nodeSelector or controller.affinity" (join ", " $hostPaths)) -}}
{{- end -}}
{{- $sc := .Values.sidecars -}}
{{- $ctrlPorts := list (list "sidecars.livenessProbe.healthPort" $sc.livenessProbe.healthPort) (list "sidecars.provisioner.httpPort" $sc.provisioner.httpPort) (list "sidecars.attacher.httpPort" $sc.attacher.httpPort) (list "sidecars.resizer.httpPort" $sc.resizer.httpPort) -}}
{{- if .Values.snapshots.enabled }}{{ $ctrlPorts = append $ctrlPorts (list "sidecars.snapshotter.httpPort" $sc.snapshotter.httpPort) }}{{ end -}}
{{- if $sc.healthMonitor.enabled }}{{ $ctrlPorts = append $ctrlPorts (list "sidecars.healthMonitor.httpPort" $sc.healthMonitor.httpPort) }}{{ end -}}
{{- $nodePorts := list (list "sidecars.livenessProbe.healthPort" $sc.livenessProbe.healthPort) (list "sidecars.nodeDriverRegistrar.httpPort" $sc.nodeDriverRegistrar.httpPort) -}}
{{- if .Values.metrics.enabled }}{{ $ctrlPorts = append $ctrlPorts (list "metrics.port" .Values.metrics.port) }}{{ $nodePorts = append $nodePorts (list "metrics.port" .Values.metrics.port) }}{{ end -}}
{{- range list (list "controller" $ctrlPorts) (list "node" $nodePorts) -}}
{{- $pod := index . 0 -}}
{{- $seen := dict -}}
{{- range index . 1 -}}
{{- $port := toString (index . 1) -}}
{{- if hasKey $seen $port -}}
{{- fail (printf "ports: %s and %s are both %s in the %s pod; give each its own" (get $seen $port) (index . 0) $port $pod) -}}
{{- end -}}
{{- $_ := set $seen $port (index . 0) -}}
{{- end -}}
{{- end -}}
{{- if and (not .Values.metrics.enabled) (or .Values.metrics.service.enabled .Values.metrics.serviceMonitor.enabled) -}}
{{- fail "metrics: service.enabled or serviceMonitor.enabled needs metrics.enabled=true (the driver serves no metrics without it)" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor")) -}}
{{- fail "metrics.serviceMonitor.enabled: the cluster does not serve monitoring.coreos.com/v1 ServiceMonitor; install the Prometheus Operator (e.g. kube-prometheus-stack) first, or with helm template pass --api-versions monitoring.coreos.com/v1/ServiceMonitor" -}}
{{- end -}}
{{- if and .Values.volumeAttributesClasses (not (.Capabilities.APIVersions.Has "storage.k8s.io/v1/VolumeAttributesClass")) -}}
{{- fail "volumeAttributesClasses: the cluster does not serve storage.k8s.io/v1 VolumeAttributesClass (Kubernetes 1.34+); upgrade the cluster or leave the list empty, or with helm template pass --api-versions storage.k8s.io/v1/VolumeAttributesClass" -}}
{{- end -}}
{{- if and .Values.snapshots.enabled (eq .Values.snapshots.class.create "always") (not (.Capabilities.APIVersions.Has "snapshot.storage.k8s.io/v1/VolumeSnapshotClass")) -}}
{{- fail "snapshots.class.create=always: the cluster does not serve snapshot.storage.k8s.io/v1 VolumeSnapshotClass; install the external-snapshotter CRDs (client/config/crd) and snapshot-controller first, use create=auto, or with helm template pass --api-versions snapshot.storage.k8s.io/v1/VolumeSnapshotClass" -}}
{{- end -}}
{{- range .Values.volumeAttributesClasses -}}
{{- if and .mount (not (has .mount $names)) -}}
{{- fail (printf "volumeAttributesClasses: %s names mount %s, which is not in mounts (%s)" .name .mount (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
