output "archive_url" {
  description = "Value for the broker's --archive-url (archive.url, SEDIMENT_ARCHIVE_URL)."
  value       = module.archive_bucket.archive_url
}

output "broker_environment" {
  description = "Non-secret settings the broker needs next to the Secret. The Kustomize base sets them in its ConfigMap sediment-archive (deploy/kustomize/base/kustomization.yaml): the overlay must carry the same values."
  value = {
    SEDIMENT_ARCHIVE_URL = module.archive_bucket.archive_url
    AWS_ENDPOINT_URL     = var.archive_endpoint
    AWS_REGION           = var.minio_region
  }
}

output "secret" {
  description = "Namespace/name of the Secret that holds AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
  value       = "${kubernetes_secret_v1.archive.metadata[0].namespace}/${kubernetes_secret_v1.archive.metadata[0].name}"
}

output "minio_user_name" {
  description = "MinIO user that owns the broker's service account."
  value       = module.archive_bucket.user_name
}
