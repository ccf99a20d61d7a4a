locals {
  user_name   = coalesce(var.user_name, "sediment-${var.bucket}")
  policy_name = "${local.user_name}-archive"

  bucket_arn  = "arn:aws:s3:::${var.bucket}"
  objects_arn = "arn:aws:s3:::${var.bucket}/${var.prefix}/*"

  # Least privilege for the broker (docs/operations.md, "archive" settings):
  # - GetObject covers GetObject, ranged GETs and HeadObject;
  # - PutObject covers PutObject (create-only, If-None-Match) and CreateMultipartUpload,
  #   UploadPart and CompleteMultipartUpload;
  # - DeleteObject covers DeleteObject and the batch DeleteObjects request;
  # - AbortMultipartUpload and ListMultipartUploadParts for multipart uploads;
  # - ListBucket, on the bucket but only for keys under the prefix (garbage collection and
  #   verify are the only callers).
  policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ListArchivePrefixOnly"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = [local.bucket_arn]
        Condition = {
          StringLike = {
            "s3:prefix" = ["${var.prefix}/", "${var.prefix}/*"]
          }
        }
      },
      {
        Sid    = "ReadWriteArchiveObjects"
        Effect = "Allow"
        Action = [
          "s3:GetObject",
          "s3:PutObject",
          "s3:DeleteObject",
          "s3:AbortMultipartUpload",
          "s3:ListMultipartUploadParts",
        ]
        Resource = [local.objects_arn]
      },
    ]
  }
}

resource "minio_s3_bucket" "this" {
  bucket         = var.bucket
  acl            = "private"
  force_destroy  = var.force_destroy
  object_locking = false
}

# Versioning is opt-in (see variables.tf). Removing this resource suspends versioning.
resource "minio_s3_bucket_versioning" "this" {
  count = var.versioning_enabled ? 1 : 0

  bucket = minio_s3_bucket.this.bucket

  versioning_configuration {
    status = "Enabled"
  }
}

# One lifecycle resource per bucket, and one rule: MinIO stores no abort-only rule and drops
# the AbortIncompleteMultipartUpload element of a rule it stores, so the provider keeps the
# abort setting in state (by rule ID) either way; a second, separate rule would show as a
# change on every plan. No expiration rule for current objects: retention is the broker's
# job, and an object deleted behind its back breaks `sediment archive verify`.
resource "minio_ilm_policy" "this" {
  bucket = minio_s3_bucket.this.bucket

  rule {
    id     = "sediment-archive"
    status = "Enabled"

    abort_incomplete_multipart_upload {
      days_after_initiation = "${var.abort_incomplete_multipart_upload_days}d"
    }

    dynamic "noncurrent_expiration" {
      for_each = var.versioning_enabled && var.noncurrent_version_expiration_days != null ? [var.noncurrent_version_expiration_days] : []

      content {
        days = "${noncurrent_expiration.value}d"
      }
    }
  }

  depends_on = [minio_s3_bucket_versioning.this]
}

resource "minio_iam_user" "this" {
  name          = local.user_name
  force_destroy = true
}

resource "minio_iam_policy" "this" {
  name   = local.policy_name
  policy = jsonencode(local.policy)
}

resource "minio_iam_user_policy_attachment" "this" {
  user_name   = minio_iam_user.this.name
  policy_name = minio_iam_policy.this.name
}

# The broker authenticates with a service account of the user, not with the user's own
# secret: it inherits the user's policy and can be rotated or revoked on its own.
resource "minio_iam_service_account" "this" {
  target_user = minio_iam_user.this.name
  name        = var.service_account_name
  description = "Sediment archive s3://${var.bucket}/${var.prefix}"
  expiration  = var.service_account_expiration

  depends_on = [minio_iam_user_policy_attachment.this]
}
