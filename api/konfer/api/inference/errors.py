"""Errors of the AI routes, with their HTTP status and public code."""

from __future__ import annotations

from konfer.core.errors import KonferError, ServiceUnavailable, ValidationFailed


class ModelNotReady(ServiceUnavailable):
    """No ready server for the task or model: the message says how to deploy one."""

    code = "MODEL_NOT_READY"
    default_message = "No model is ready for this task"


class UnsupportedFormat(ValidationFailed):
    code = "UNSUPPORTED_FORMAT"
    default_message = "Unsupported audio format. Supported formats: wav, mp3, ogg, flac"


class UnsupportedLanguage(ValidationFailed):
    code = "UNSUPPORTED_LANGUAGE"
    default_message = "The model cannot handle this language"


class ModelLoadFailed(KonferError):
    status_code = 500
    code = "MODEL_LOAD_FAILED"
    default_message = "Failed to load model"


class InferenceFailed(KonferError):
    status_code = 500
    code = "INFERENCE_FAILED"
    default_message = "The model server failed to answer"
