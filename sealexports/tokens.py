"""Download tokens: signed (not encrypted) job ids that expire after the download TTL."""

from __future__ import annotations

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from sealexports.errors import NotFound

SALT = "sealexports.download"


class DownloadTokens:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)
        self.ttl_seconds = ttl_seconds

    def sign(self, job_id: str) -> str:
        return self._serializer.dumps(job_id)

    def open(self, token: str) -> tuple[str, bool]:
        """(job id, expired?) for an authentic token; NotFound if tampered or malformed."""
        try:
            job_id, expired = self._serializer.loads(token, max_age=self.ttl_seconds), False
        except SignatureExpired as e:  # a subclass of BadSignature: catch it first
            if e.payload is None:
                raise NotFound("download link not found") from None
            job_id, expired = self._serializer.load_payload(e.payload), True
        except BadSignature:
            raise NotFound("download link not found") from None
        if not isinstance(job_id, str):
            raise NotFound("download link not found")
        return job_id, expired
