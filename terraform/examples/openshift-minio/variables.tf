variable "minio_server" {
  description = "MinIO S3 API endpoint as host:port, as reachable from where Terraform runs (e.g. minio-api-minio.apps.example.com:443, or localhost:9000 through `oc port-forward`)."
  type        = string
  sensitive   = true
}

variable "minio_user" {
  description = "MinIO admin user (or an access key allowed to create buckets, users, policies and service accounts). Prefer the MINIO_USER environment variable or TF_VAR_minio_user over a file."
  type        = string
  sensitive   = true
}

variable "minio_password" {
  description = "Password (secret key) of minio_user. Prefer TF_VAR_minio_password over a file."
  type        = string
  sensitive   = true
}

variable "minio_region" {
  description = "Region MinIO is configured with; also AWS_REGION for the broker."
  type        = string
  default     = "us-east-1"
}

variable "minio_ssl" {
  description = "Talk to minio_server over HTTPS."
  type        = bool
  default     = true
}

variable "minio_insecure" {
  description = "Skip verification of MinIO's TLS certificate (test clusters with self-signed routes only; prefer minio_cacert_file)."
  type        = bool
  default     = false
}

variable "minio_cacert_file" {
  description = "Optional path to the CA certificate that signed MinIO's TLS certificate (e.g. the OpenShift ingress CA)."
  type        = string
  default     = null
}

variable "archive_endpoint" {
  description = "S3 endpoint the broker uses inside the cluster (AWS_ENDPOINT_URL), usually MinIO's Service rather than the Route Terraform uses. Reported in the broker_environment output, not stored in the Secret; the default is the value of the Kustomize base's ConfigMap sediment-archive."
  type        = string
  default     = "http://minio.minio.svc:9000"
}

variable "kubeconfig_path" {
  description = "Path of the kubeconfig used to reach the OpenShift cluster (`oc login` writes ~/.kube/config)."
  type        = string
  default     = "~/.kube/config"
}

variable "kubeconfig_context" {
  description = "Context in the kubeconfig to use. null: its current context."
  type        = string
  default     = null
}

variable "namespace" {
  description = "Namespace (OpenShift project) of the Sediment deployment; the Secret is created in it."
  type        = string
  default     = "sediment"
}

variable "create_namespace" {
  description = "Create the namespace. Set false when it already exists (e.g. created with `oc new-project`)."
  type        = bool
  default     = true
}

variable "bucket" {
  description = "MinIO bucket of the archive."
  type        = string
  default     = "sediment-archive"
}

variable "prefix" {
  description = "Key prefix of this cluster's archive in the bucket (one prefix per Sediment cluster)."
  type        = string
  default     = "cluster-a"
}

variable "versioning_enabled" {
  description = "Turn on bucket versioning (off by default: archive objects are immutable and create-only; see the minio-bucket module)."
  type        = bool
  default     = false
}
