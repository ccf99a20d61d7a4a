output "bucket" {
  description = "Name of the archive bucket."
  value       = minio_s3_bucket.this.bucket
}

output "prefix" {
  description = "Key prefix of this cluster's archive inside the bucket."
  value       = var.prefix
}

output "archive_url" {
  description = "Value for the broker's --archive-url (archive.url, SEDIMENT_ARCHIVE_URL)."
  value       = "s3://${minio_s3_bucket.this.bucket}/${var.prefix}"
}

output "user_name" {
  description = "MinIO IAM user that owns the broker's access key."
  value       = minio_iam_user.this.name
}

output "policy_name" {
  description = "Name of the least-privilege MinIO policy attached to the user."
  value       = minio_iam_policy.this.name
}

output "policy_json" {
  description = "The least-privilege policy document, as JSON."
  value       = jsonencode(local.policy)
}

output "access_key_id" {
  description = "Access key of the broker's service account (AWS_ACCESS_KEY_ID)."
  value       = minio_iam_service_account.this.access_key
  sensitive   = true
}

output "secret_access_key" {
  description = "Secret key of the broker's service account (AWS_SECRET_ACCESS_KEY)."
  value       = minio_iam_service_account.this.secret_key
  sensitive   = true
}
