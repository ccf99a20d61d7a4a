variable "bucket" {
  description = "Name of the MinIO bucket that holds the Sediment archive (3-63 characters: lowercase letters, digits, dots and hyphens)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket)) && !strcontains(var.bucket, "..")
    error_message = "The bucket name must be 3-63 characters of lowercase letters, digits, dots and hyphens, start and end with a letter or digit, and hold no \"..\"."
  }
}

variable "prefix" {
  description = "Key prefix of this cluster's archive inside the bucket, without leading or trailing slash (the PREFIX of --archive-url s3://BUCKET/PREFIX). One prefix per Sediment cluster; the access policy covers only this prefix."
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

variable "user_name" {
  description = "Name of the MinIO IAM user the broker's access key belongs to. Default: sediment-<bucket>."
  type        = string
  default     = null
}

variable "versioning_enabled" {
  description = "Turn on bucket versioning. Off by default: Sediment writes every archive object once (create-only PutObject with If-None-Match) and never overwrites it, so versions add nothing but the storage of deleted objects. Turn it on only where a compliance rule asks for recoverable deletes, and then set noncurrent_version_expiration_days. Turning it off later suspends versioning (a bucket never returns to unversioned)."
  type        = bool
  default     = false
}

variable "noncurrent_version_expiration_days" {
  description = "With versioning on: days after which noncurrent versions (objects the broker deleted through retention or garbage collection) are removed for good. null keeps them forever. Ignored when versioning is off."
  type        = number
  default     = null

  validation {
    condition     = var.noncurrent_version_expiration_days == null || try(var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days, false)
    error_message = "noncurrent_version_expiration_days must be null or a whole number of days, at least 1."
  }
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Days after which an incomplete multipart upload (left by a broker that crashed mid-upload) is aborted. MinIO does not store abort-only lifecycle rules: the rule is kept in Terraform state for the record, and MinIO itself removes stale uploads after its server-wide `api stale_uploads_expiry` (24h by default); see the README."
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

variable "service_account_name" {
  description = "Display name of the service account (access key) created for the broker (32 bytes at most)."
  type        = string
  default     = "sediment-archive"

  validation {
    condition     = length(var.service_account_name) <= 32
    error_message = "service_account_name is limited to 32 bytes by MinIO."
  }
}

variable "service_account_expiration" {
  description = "Optional expiry of the access key, RFC 3339 (between 15 minutes and 365 days from now). null: no expiry. When it expires the broker keeps serving from local disk and archiving stops until a new key is in the Secret."
  type        = string
  default     = null
}
