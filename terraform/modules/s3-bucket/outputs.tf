output "bucket" {
  description = "Name of the archive bucket."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the archive bucket."
  value       = aws_s3_bucket.this.arn
}

output "prefix" {
  description = "Key prefix of this cluster's archive inside the bucket."
  value       = var.prefix
}

output "archive_url" {
  description = "Value for the broker's --archive-url (archive.url, SEDIMENT_ARCHIVE_URL)."
  value       = "s3://${aws_s3_bucket.this.id}/${var.prefix}"
}

output "region" {
  description = "Region of the bucket (AWS_REGION for the broker)."
  value       = data.aws_region.current.name
}

output "role_arn" {
  description = "ARN of the IAM role for the service account (AWS_ROLE_ARN, or the eks.amazonaws.com/role-arn annotation)."
  value       = aws_iam_role.this.arn
}

output "role_name" {
  description = "Name of the IAM role for the service account."
  value       = aws_iam_role.this.name
}

output "policy_arn" {
  description = "ARN of the least-privilege policy attached to the role."
  value       = aws_iam_policy.archive.arn
}

output "policy_json" {
  description = "The least-privilege policy document, as JSON."
  value       = data.aws_iam_policy_document.archive.json
}

output "service_account_annotations" {
  description = "Annotations for the Sediment service account on EKS (pod identity webhook)."
  value       = { "eks.amazonaws.com/role-arn" = aws_iam_role.this.arn }
}
