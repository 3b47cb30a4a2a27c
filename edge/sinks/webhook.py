"""HTTP POST of each event's JSON, with a timeout over the whole request and bounded retries
with backoff. Redirects are never followed: a target that redirects is a configuration error,
reported once in the log and counted (`redirects`, and the event as lost)."""

from __future__ import annotations

import http.client
import json

from pydantic import Field

import edge
from edge import httppost
from edge.schema import read_secret
from edge.sinks.base import SINKS, EventSinkParams, Item, Sink
from edge.urlmask import mask_url


class WebhookParams(EventSinkParams):
    url: str = Field(
        ..., pattern=r"^https?://", description="http:// or https:// address to POST to"
    )
    timeout_s: float = Field(
        5.0, ge=0.01, le=300, description="each attempt (connect, send, answer) ends within this"
    )
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
    def __init__(self, message: str, retry: bool, redirect: bool = False) -> None:
        super().__init__(message)
        self.retry = retry
        self.redirect = redirect


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
        self.redirects = 0
        self.state = "ok"

    def post(self, body: bytes) -> None:
        self.attempts += 1
        try:
            # timeout_s bounds the whole exchange; a redirect comes back, it is not followed
            # (urllib would follow it to any origin as a GET, Authorization included)
            answer = httppost.post(self.params.url, body, self.headers, self.params.timeout_s)
        except (OSError, http.client.HTTPException) as e:
            # refused, timeout, reset, DNS, a garbled answer
            raise HttpError(f"{type(e).__name__}: {e}", True) from None
        code = answer.status
        if 300 <= code < 400:
            self.redirects += 1
            msg = (f"HTTP {code} redirect to {mask_url(answer.location or '?')}: a webhook "
                   "target that redirects is a configuration error (redirects are not "
                   "followed, so the token never leaves the configured origin): set url to "
                   "the final address")
            raise HttpError(msg, False, redirect=True)
        if code >= 400:
            retry = code >= 500 or code in (408, 429)
            raise HttpError(f"HTTP {code} {answer.reason}", retry)

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
                if e.retry:  # (a state unchanged by a config error keeps its log line single)
                    self.state = f"retrying: {e}"
                if not e.retry or attempt == self.params.retries or self.sleep(delay):
                    self.lost += 1
                    url = mask_url(self.params.url)
                    # the same line for every event a redirect loses: the log says it once
                    what = "events are lost" if e.redirect else f"event seq {event['seq']} lost"
                    raise RuntimeError(f"{url}: {e}; {what}") from None
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
        return {"attempts": self.attempts, "lost": self.lost, "redirects": self.redirects}
