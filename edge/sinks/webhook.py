"""HTTP POST of each event's JSON, with a timeout and bounded retries with backoff."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request

from pydantic import Field

import edge
from edge.config import read_secret
from edge.sinks import SINKS
from edge.sinks.base import EventSinkParams, Item, Sink


class WebhookParams(EventSinkParams):
    url: str = Field(
        ..., pattern=r"^https?://", description="http:// or https:// address to POST to"
    )
    timeout_s: float = Field(5.0, ge=0.01, le=300, description="per-request connect+read timeout")
    retries: int = Field(
        5, ge=0, le=100, description="attempts after the first for a 5xx, 408, 429 or network error"
    )
    backoff_initial_s: float = Field(
        1.0, ge=0.01, le=3600, description="first retry delay (doubles)"
    )
    backoff_max_s: float = Field(60.0, ge=0.01, le=3600, description="retry delay cap")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    token: str | None = Field(
        None, description="sent as 'Authorization: Bearer TOKEN' (prefer token_file or ${ENV})"
    )
    token_file: str | None = Field(None, description="file holding the bearer token")


class HttpError(RuntimeError):
    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@SINKS.register("webhook")
class WebhookSink(Sink):
    """POST each event as JSON to a URL, retrying server errors with backoff."""

    Params = WebhookParams

    def __init__(self, params: WebhookParams, ctx) -> None:
        super().__init__(params, ctx)
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"edge/{edge.__version__}",
            **params.headers,
        }
        token = read_secret(params.token, params.token_file, "outputs.webhook.token_file")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.attempts = 0
        self.lost = 0
        self.state = "ok"

    def post(self, body: bytes) -> None:
        self.attempts += 1
        req = urllib.request.Request(self.params.url, body, self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.params.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            retry = e.code >= 500 or e.code in (408, 429)
            raise HttpError(f"HTTP {e.code} {e.reason}", retry) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            # refused, timeout, reset, DNS, a garbled answer
            reason = getattr(e, "reason", e)
            raise HttpError(f"{type(reason).__name__}: {reason}", True) from None

    def send(self, event: dict) -> None:
        body = json.dumps(event).encode()
        delay = self.params.backoff_initial_s
        for attempt in range(self.params.retries + 1):
            try:
                self.post(body)
                self.sent += 1
                self.state = "ok"
                return
            except HttpError as e:
                self.state = f"retrying: {e}"
                if not e.retry or attempt == self.params.retries or self.sleep(delay):
                    self.lost += 1
                    msg = f"{self.params.url}: {e}; event seq {event['seq']} lost"
                    raise RuntimeError(msg) from None
                delay = min(delay * 2, self.params.backoff_max_s)

    def handle(self, item: Item) -> None:
        failed = []
        for e in item.events:
            try:
                self.send(e)
            except RuntimeError as x:
                failed.append(str(x))
        if failed:
            raise RuntimeError("; ".join(failed))

    def extra(self) -> dict:
        return {"attempts": self.attempts, "lost": self.lost}
