data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  role_name   = coalesce(var.role_name, substr("sediment-archive-${var.bucket}", 0, 64))
  oidc_issuer = trimsuffix(trimprefix(var.oidc_provider_url, "https://"), "/")
  objects_arn = "${aws_s3_bucket.this.arn}/${var.prefix}/*"
  use_kms     = var.kms_key_arn != null
  tags        = merge({ "app.kubernetes.io/name" = "sediment", "app.kubernetes.io/component" = "archive" }, var.tags)
}

################################################################################
# Bucket
################################################################################

resource "aws_s3_bucket" "this" {
  # checkov:skip=CKV_AWS_18: Server access logging needs a separate log bucket this module does not own; this module grants data access to the broker role only, and requests are auditable with CloudTrail S3 data events.
  # checkov:skip=CKV_AWS_144: Cross-region replication is a disaster-recovery choice outside this module: it needs versioning and a destination bucket in another region; S3 already stores objects redundantly across zones. Add aws_s3_bucket_replication_configuration in the root where DR requires a second region.
  # checkov:skip=CKV2_AWS_62: Event notifications do not apply: nothing consumes bucket events; the broker writes its own manifest of every archived object.
  bucket        = var.bucket
  force_destroy = var.force_destroy
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# ACLs off: the bucket owner owns every object, access is by policy only.
resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = local.use_kms ? "aws:kms" : "AES256"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = local.use_kms
  }
}

# Versioning is opt-in (see variables.tf). Removing this resource suspends versioning.
resource "aws_s3_bucket_versioning" "this" {
  count = var.versioning_enabled ? 1 : 0

  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

# No expiration rule for current objects: retention is the broker's job, and an object
# deleted behind its back breaks `sediment archive verify`.
resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_upload_days
    }
  }

  dynamic "rule" {
    for_each = var.versioning_enabled && var.noncurrent_version_expiration_days != null ? [var.noncurrent_version_expiration_days] : []

    content {
      id     = "expire-noncurrent-versions"
      status = "Enabled"

      filter {}

      noncurrent_version_expiration {
        noncurrent_days = rule.value
      }

      expiration {
        expired_object_delete_marker = true
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.bucket.json

  # A bucket policy is refused while the public access block is being created.
  depends_on = [aws_s3_bucket_public_access_block.this]
}

################################################################################
# IAM role for the broker's service account (IRSA / OpenShift STS web identity)
################################################################################

data "aws_iam_policy_document" "trust" {
  statement {
    sid     = "SedimentServiceAccount"
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account_name}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = [var.oidc_audience]
    }
  }
}

# Least privilege for the broker (docs/operations.md, "archive" settings):
# - s3:GetObject covers GetObject, ranged GETs and HeadObject;
# - s3:PutObject covers PutObject (create-only, If-None-Match), CreateMultipartUpload,
#   UploadPart and CompleteMultipartUpload;
# - s3:DeleteObject covers DeleteObject and the batch DeleteObjects request;
# - s3:AbortMultipartUpload and s3:ListMultipartUploadParts for multipart uploads;
# - s3:ListBucket, on the bucket but only for keys under the prefix (garbage collection
#   and verify are the only callers).
data "aws_iam_policy_document" "archive" {
  statement {
    sid       = "ListArchivePrefixOnly"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.prefix}/", "${var.prefix}/*"]
    }
  }

  statement {
    sid    = "ReadWriteArchiveObjects"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [local.objects_arn]
  }

  dynamic "statement" {
    for_each = local.use_kms ? [var.kms_key_arn] : []

    content {
      sid       = "UseBucketKmsKeyThroughS3"
      effect    = "Allow"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${data.aws_region.current.name}.${data.aws_partition.current.dns_suffix}"]
      }
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = local.role_name
  path                 = var.role_path
  description          = "Sediment archive s3://${var.bucket}/${var.prefix} for ${var.namespace}/${var.service_account_name}"
  assume_role_policy   = data.aws_iam_policy_document.trust.json
  max_session_duration = var.max_session_duration
  permissions_boundary = var.permissions_boundary_arn
  tags                 = local.tags
}

resource "aws_iam_policy" "archive" {
  name        = "${local.role_name}-s3"
  path        = var.role_path
  description = "Least privilege for Sediment on s3://${var.bucket}/${var.prefix}"
  policy      = data.aws_iam_policy_document.archive.json
  tags        = local.tags
}

resource "aws_iam_role_policy_attachment" "archive" {
  role       = aws_iam_role.this.name
  policy_arn = aws_iam_policy.archive.arn
}
