variable "bucket" {
  description = "Name of the S3 bucket that holds the Sediment archive (globally unique, 3-63 characters: lowercase letters, digits, dots and hyphens)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket)) && !strcontains(var.bucket, "..")
    error_message = "The bucket name must be 3-63 characters of lowercase letters, digits, dots and hyphens, start and end with a letter or digit, and hold no \"..\"."
  }
}

variable "prefix" {
  description = "Key prefix of this cluster's archive inside the bucket, without leading or trailing slash (the PREFIX of --archive-url s3://BUCKET/PREFIX). One prefix per Sediment cluster; the role's policy covers only this prefix."
  type        = string

  validation {
    condition = alltrue([
      can(regex("^[A-Za-z0-9!_.'()=-]+(/[A-Za-z0-9!_.'()=-]+)*$", var.prefix)),
      !contains(split("/", var.prefix), "."),
      !contains(split("/", var.prefix), ".."),
    ])
    error_message = "The prefix must be non-empty, have no leading, trailing or doubled slash, no \".\" or \"..\" segment, and use only letters, digits and !_.'()=- (no wildcards: it is used in policy ARNs)."
  }
}

variable "kms_key_arn" {
  description = "ARN of a customer-managed KMS key for SSE-KMS (with an S3 Bucket Key to keep KMS requests, and cost, low). null: SSE-S3 (AES256). With a key, the role is also allowed kms:GenerateDataKey and kms:Decrypt on it, through S3 only; the key policy must allow the account's IAM policies to grant that."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be null or a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID); an alias is not accepted in the IAM policy."
  }
}

variable "versioning_enabled" {
  description = "Turn on bucket versioning. Off by default: Sediment writes every archive object once (create-only PutObject with If-None-Match) and never overwrites it, so versions add nothing but the storage of deleted objects. Turn it on only where a compliance rule asks for recoverable deletes, and then set noncurrent_version_expiration_days. Turning it off later suspends versioning (a bucket never returns to unversioned)."
  type        = bool
  default     = false
}

variable "noncurrent_version_expiration_days" {
  description = "With versioning on: days after which noncurrent versions (objects the broker deleted through retention or garbage collection) are removed for good, together with the delete markers left alone. null keeps them forever. Ignored when versioning is off."
  type        = number
  default     = null

  validation {
    condition     = var.noncurrent_version_expiration_days == null || try(var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days, false)
    error_message = "noncurrent_version_expiration_days must be null or a whole number of days, at least 1."
  }
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Days after which an incomplete multipart upload (left by a broker that crashed mid-upload) is aborted and its parts deleted."
  type        = number
  default     = 1

  validation {
    condition     = var.abort_incomplete_multipart_upload_days >= 1 && floor(var.abort_incomplete_multipart_upload_days) == var.abort_incomplete_multipart_upload_days
    error_message = "abort_incomplete_multipart_upload_days must be a whole number of days, at least 1."
  }
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete the bucket with every archived object in it. Keep false outside of test set-ups: the archive may be the only copy of old data."
  type        = bool
  default     = false
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC identity provider (EKS: module output or aws_iam_openid_connect_provider.arn; ROSA/OpenShift with STS: the provider created for the cluster's service-account issuer)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/.+$", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must look like arn:aws:iam::ACCOUNT:oidc-provider/ISSUER."
  }
}

variable "oidc_provider_url" {
  description = "Issuer URL of the same OIDC provider, with or without https:// (e.g. oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B7). Used for the :sub and :aud condition keys of the trust policy."
  type        = string
}

variable "oidc_audience" {
  description = "Audience of the projected service-account token (aud claim) that the trust policy accepts. sts.amazonaws.com for the EKS pod identity webhook; match the audience of the token mounted at AWS_WEB_IDENTITY_TOKEN_FILE elsewhere."
  type        = string
  default     = "sts.amazonaws.com"
}

variable "namespace" {
  description = "Kubernetes namespace of the Sediment StatefulSet."
  type        = string
  default     = "sediment"
}

variable "service_account_name" {
  description = "Kubernetes service account of the Sediment pods; only this account in this namespace may assume the role."
  type        = string
  default     = "sediment"
}

variable "role_name" {
  description = "Name of the IAM role for the service account. Default: sediment-archive-<bucket>, cut to 64 characters."
  type        = string
  default     = null
}

variable "role_path" {
  description = "IAM path of the role and its policy."
  type        = string
  default     = "/"
}

variable "permissions_boundary_arn" {
  description = "Optional ARN of a permissions boundary for the role."
  type        = string
  default     = null
}

variable "max_session_duration" {
  description = "Longest session, in seconds, the role grants (3600-43200). The AWS SDK in the broker refreshes web-identity credentials before they expire."
  type        = number
  default     = 3600

  validation {
    condition     = var.max_session_duration >= 3600 && var.max_session_duration <= 43200
    error_message = "max_session_duration must be between 3600 and 43200 seconds."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes them."
  type        = map(string)
  default     = {}
}
